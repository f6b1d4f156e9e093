"""YAML text to plain Python values, remembering the line of every path.

The loader validates plain dicts and lists; this module gives it, for every YAML path such
as ``model.h.given[0]``, the 1-based line it came from, so errors can point at it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ggdsl.errors import Problem, SpecError

MAX_DEPTH = 64
MAX_NODES = 200_000


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponent floats without a dot (``6e-4``, ``1E5``) as
    numbers, as YAML 1.2 and every other YAML library do, not as strings."""


#: YAML 1.2's exponent floats that YAML 1.1 (PyYAML) leaves as strings.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


def load_value(text: str) -> Any:
    """One YAML value (a ``--set`` override, a stored spec) read as spec files are read."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass


def join(path: str, key: Any) -> str:
    """``join("model", "h") == "model.h"``; ``join("model.h.given", 0) == "model.h.given[0]"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Walker:
    def __init__(self, loader: SpecLoader, file: str):
        self.loader = loader
        self.file = file
        self.lines: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.count = 0

    def walk(self, node: yaml.Node, path: str, depth: int) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if depth > MAX_DEPTH or self.count > MAX_NODES:
            raise SpecError([Problem(self.file, line, path, "the document is nested too deeply or is too large")])
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, path, "mapping keys must be plain names")
                    )
                    continue
                key = self._scalar(key_node, path)
                if isinstance(key, (int, float, bool)) or key is None:
                    key = str(key_node.value)
                if key in out:
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, join(path, key), "duplicate key")
                    )
                    continue
                self.lines[join(path, key)] = key_node.start_mark.line + 1
                out[key] = self.walk(value_node, join(path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, join(path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            self.problems.append(Problem(self.file, node.start_mark.line + 1, path, f"bad value: {error}"))
            return None
        except (ValueError, OverflowError) as error:  # e.g. malformed timestamps
            self.problems.append(Problem(self.file, node.start_mark.line + 1, path, f"bad value: {error}"))
            return None


def parse_yaml(text: str, file: str) -> tuple[Any, dict[str, int], list[Problem]]:
    """Parse one YAML document; returns (value, lines by path, problems).

    A syntax error raises :class:`SpecError` at once, with the line YAML reports.
    """
    try:
        loader = SpecLoader(text)
    except yaml.YAMLError as error:  # e.g. control characters, caught by the reader up front
        raise SpecError([Problem(file, None, "", f"YAML: {error}")]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark is not None else None
            raise SpecError([Problem(file, line, "", f"YAML syntax: {error.problem or error}")]) from None
        except yaml.YAMLError as error:
            raise SpecError([Problem(file, None, "", f"YAML syntax: {error}")]) from None
        except RecursionError:
            raise SpecError([Problem(file, None, "", "the document is nested too deeply")]) from None
        if node is None:
            raise SpecError([Problem(file, 1, "", "the file is empty; a spec needs at least name and model")])
        walker = _Walker(loader, file)
        try:
            value = walker.walk(node, "", 0)
        except RecursionError:
            raise SpecError([Problem(file, None, "", "the document is nested too deeply")]) from None
        return value, walker.lines, walker.problems
    finally:
        loader.dispose()
