"""The digits spec with one line added to its objective, and the problems loading it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggdsl.cli import BUNDLED
from ggdsl.errors import SpecError
from ggdsl.spec.load import load_spec


def objective_line_problems(tmp_path: Path, added: str) -> tuple[Path, int, list[str]]:
    """(spec path, line number of ``added``, each problem as ``file:line: message``)."""
    path = tmp_path / "bad.yaml"
    text = (BUNDLED / "gmgan_digits.yaml").read_text()
    path.write_text(text.replace("  divergence: local\n", f"  divergence: local\n  {added}\n"))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    line = text.splitlines().index("  divergence: local") + 2
    return path, line, [str(p) for p in error.value.problems]
