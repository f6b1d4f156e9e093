"""Exception types: one per stage, all under :class:`GGDSLError`.

Spec errors carry every problem found in a file, each with its file, line and YAML path,
so a user fixes them all in one pass::

    specs/bad.yaml:14: model.h.given[0]: unknown variable 'z' (known: k, x)
"""

from __future__ import annotations

from dataclasses import dataclass


class GGDSLError(Exception):
    """Base class of every error ggdsl raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a spec: where it is and what is wrong."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(GGDSLError):
    """A spec does not follow the format; holds every problem found, in file order."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(sorted(problems, key=lambda p: (p.line or 0, p.path)))
        super().__init__("\n".join(str(p) for p in self.problems))


class GraphError(SpecError):
    """The model's graph is not a valid Bayesian network (a cycle, a bad time reference)."""


class BuildError(GGDSLError):
    """Networks cannot be assembled from the spec (shape mismatch, unknown preset)."""


class DataError(GGDSLError):
    """A data source is missing, malformed, or does not match the model."""


class TrainError(GGDSLError):
    """Training cannot start or continue (incompatible resume, non-finite values)."""


class EvalError(GGDSLError):
    """An evaluation cannot run on this run folder."""
