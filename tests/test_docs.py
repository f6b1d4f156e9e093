"""The documentation under docs/: the tutorial runs as written, the reference is generated.

The tutorial is followed verbatim: in an empty folder, every block marked
``<!-- file: NAME -->`` is written to NAME, every ```bash block is run in order (its exit
status must be 0, or N where marked ``<!-- exit: N -->``), and a block marked
``<!-- output -->`` (``<!-- stderr -->``) must equal what the command before it printed on
standard output (standard error). The run is tiny (about 30 s on a 2-core CPU).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ggdsl
from ggdsl import reference
from ggdsl.data import registry as data_registry
from ggdsl.nets.shapes import LAYER_KINDS, PRESETS
from ggdsl.spec import schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- (?:file: (?P<file>[\w.-]+)|exit: (?P<exit>\d+)|(?P<stream>output|stderr)) -->$")


@dataclass
class Step:
    """One thing the page asks the reader to do: write a file or run a command."""

    kind: str  # "file" | "bash"
    text: str
    name: str = ""  # the file's name
    exit: int = 0
    expect: dict[str, str] = field(default_factory=dict)  # "output" / "stderr" -> text
    line: int = 0


def page_steps(text: str) -> list[Step]:
    """The files and commands of a Markdown page, in order, with what each promises."""
    lines = text.splitlines()
    steps: list[Step] = []
    marker: re.Match | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        match = MARKER.match(line.strip())
        fence = FENCE.match(line)
        if match:
            marker = match
        elif fence:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            body = "\n".join(lines[index + 1 : end]) + "\n"
            language, start = fence.group(1), index + 1
            if marker is not None and marker.group("file"):
                steps.append(Step("file", body, name=marker.group("file"), line=start))
            elif language == "bash":
                exit_code = int(marker.group("exit")) if marker is not None and marker.group("exit") else 0
                steps.append(Step("bash", body, exit=exit_code, line=start))
            elif marker is not None and marker.group("stream"):
                assert steps and steps[-1].kind == "bash", f"line {start}: an output block follows no command"
                steps[-1].expect[marker.group("stream")] = body
            marker = None
            index = end
        elif line.strip():
            marker = None
        index += 1
    return steps


def test_page_steps_reads_markers():
    page = (
        "<!-- file: a.yaml -->\n```yaml\nname: a\n```\n\n<!-- exit: 2 -->\n```bash\nfalse\n```\n\n"
        "<!-- stderr -->\n```text\nbad\n```\n\n```text\nnot checked\n```\n```bash\ntrue\n```\n"
        "<!-- output -->\n\n```text\nok\n```\n"
    )
    steps = page_steps(page)
    assert [(s.kind, s.name, s.text, s.exit, s.expect) for s in steps] == [
        ("file", "a.yaml", "name: a\n", 0, {}),
        ("bash", "", "false\n", 2, {"stderr": "bad\n"}),
        ("bash", "", "true\n", 0, {"output": "ok\n"}),
    ]


# -- the tutorial, run as written ------------------------------------------------------------------


@dataclass
class Ran:
    step: Step
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> tuple[Path, list[Ran]]:
    """Every step of docs/tutorial.md, done in an empty folder."""
    folder = tmp_path_factory.mktemp("tutorial")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    ran = []
    for step in page_steps((DOCS / "tutorial.md").read_text(encoding="utf-8")):
        if step.kind == "file":
            (folder / step.name).write_text(step.text, encoding="utf-8")
            continue
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", step.text],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        ran.append(Ran(step, result.returncode, result.stdout, result.stderr))
        if result.returncode != step.exit:
            break  # later steps depend on this one; the test below reports it
    return folder, ran


def test_tutorial_commands_exit_and_print_as_written(tutorial):
    folder, ran = tutorial
    steps = [s for s in page_steps((DOCS / "tutorial.md").read_text(encoding="utf-8")) if s.kind == "bash"]
    assert len(ran) == len(steps), f"stopped at line {ran[-1].step.line}: {ran[-1].step.text}{ran[-1].stderr}"
    for each in ran:
        where = f"tutorial.md:{each.step.line}: {each.step.text.strip()}"
        assert each.returncode == each.step.exit, f"{where}: exit {each.returncode}\n{each.stderr}"
        if "output" in each.step.expect:
            assert each.stdout == each.step.expect["output"], where
        if "stderr" in each.step.expect:
            assert each.stderr == each.step.expect["stderr"], where
    checked = sum(len(each.step.expect) for each in ran)
    assert checked >= 10  # validate, its errors, explain, graph, the folder, spec, metrics, figures, Python


def test_tutorial_every_command_is_a_bash_block():
    text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    languages = {m.group(1) for line in text.splitlines() if (m := FENCE.match(line)) and m.group(1)}
    assert languages == {"bash", "yaml", "python", "text"}
    assert not re.search(r"^\s*\$ ", text, re.MULTILINE)
    steps = page_steps(text)
    commands = [s.text.strip() for s in steps if s.kind == "bash"]
    for verb in ("validate", "explain", "graph", "compile-and-train", "eval", "sample"):
        assert any(c.startswith(f"ggdsl {verb} ") for c in commands), verb
    assert [s.name for s in steps if s.kind == "file"] == ["first.yaml", "read_run.py", "use_run.py"]


def test_tutorial_run_folder_holds_what_the_page_promises(tutorial):
    folder, ran = tutorial
    assert all(each.returncode == each.step.exit for each in ran)
    svg = (folder / "first.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "p(X, Z)" in svg and "q(Z | X)" in svg
    (run_dir,) = (folder / "runs").iterdir()
    assert run_dir.name.startswith("first-")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints",
        "eval.json",
        "figures",
        "metrics.jsonl",
        "report.html",
        "spec.yaml",
        "tb",
    ]
    # spec.yaml: the tutorial's spec, defaults filled in, with the steps of the resume.
    written = ggdsl.load_spec(folder / "first.yaml", overrides=["train.steps=300"])
    assert ggdsl.load_spec(run_dir / "spec.yaml") == written
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["100", "200", "300"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [50, 100, 100, 150, 200, 250, 300]
    losses = {"d_loss", "g_loss", "g_adv", "recon", "d_loss/x|h", "d_loss/h|k", "d_acc/x|h", "d_acc/h|k", "usage/k"}
    for record in records:
        if "eval/clustering_accuracy" not in record:
            assert set(record) == losses | {"step", "steps_per_s"}
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation) == {
        "step",
        "clustering_accuracy",
        "clustering_accuracy_majority",
        "clusters_used",
        "reconstruction_mse",
        "samples_figure",
        "factor_accuracy/x|h",
        "factor_accuracy/h|k",
    }
    # eval.json is the final evaluation of the resumed run, at step 300.
    assert evaluation["step"] == 300 and evaluation["samples_figure"] == "samples_step300.png"
    assert 0.0 <= evaluation["clustering_accuracy"] <= 1.0
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"reconstruction.png", "samples_step100.png", "samples_step200.png", "samples_step300.png"} <= figures
    assert (folder / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the reference, generated ----------------------------------------------------------------------


def test_reference_is_generated_without_jax_and_matches_the_committed_file():
    code = (
        "import sys\n"
        "from ggdsl.reference import reference_markdown\n"
        "sys.stdout.write(reference_markdown())\n"
        "bad = [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    committed = (DOCS / "reference.md").read_text(encoding="utf-8")
    assert result.stdout == committed, "docs/reference.md is stale: run python -m ggdsl.reference -o docs/reference.md"


def test_reference_lists_every_registered_name():
    text = reference.reference_markdown()
    assert "(undocumented)" not in text
    names = [*schema.TOP_KEYS, *schema.COMMON_KEYS, *schema.EVAL_NAMES, *reference.TIME_KEYS]
    for table in (schema.INFERENCE_KEYS, schema.OBJECTIVE_KEYS, schema.TRAIN_KEYS):
        names += list(table)
    for node in schema.NODE_TYPES.values():
        assert f"### `{node.name}`" in text
        names += list(node.keys)
    for kind in LAYER_KINDS.values():
        names += [kind.name, *kind.keys]
    names += list(PRESETS)
    for source in data_registry.source_names():
        assert f"### `{source}`" in text
        names += list(data_registry.source_keys(source))
    missing = sorted({name for name in names if f"`{name}`" not in text})
    assert not missing


def test_reference_documents_every_evaluation():
    from ggdsl.evaluate.run_eval import EVALUATIONS

    assert set(reference.EVAL_DOCS) == set(schema.EVAL_NAMES) == set(EVALUATIONS)
    assert set(reference.TOP_DOCS) == set(schema.TOP_KEYS)


def test_reference_follows_the_registries(tmp_path):
    @schema.register_node("spike", keys={"height": schema.Key(schema.check_float(0.0), default=1.0, doc="how high")})
    def check_spike(var):
        """A spike at the origin."""
        return []

    try:
        text = reference.reference_markdown()
    finally:
        del schema.NODE_TYPES["spike"]
    assert "### `spike`\n\nA spike at the origin.\n\n| key | default | what |\n|---|---|---|\n" in text
    assert "| `height` | `1.0` | how high |" in text
    assert reference.main(["-o", str(tmp_path / "reference.md")]) == 0
    assert (tmp_path / "reference.md").read_text(encoding="utf-8") == reference.reference_markdown()


# -- concepts: explain snippets and pictures -------------------------------------------------------

EXPLAIN_MARKER = re.compile(
    r"^<!-- explain: (?P<spec>\w+)(?P<overrides>(?: [\w.]+=\S+)*) -->\n```text\n(.*?)```", re.M | re.S
)


def test_concepts_explain_snippets_are_what_explain_prints():
    from ggdsl.cli import resolve_spec_path
    from ggdsl.explain import explain

    text = (DOCS / "concepts.md").read_text(encoding="utf-8")
    snippets = EXPLAIN_MARKER.findall(text)
    assert len(snippets) >= 8
    assert {name for name, _, _ in snippets} == {
        "gmgan_digits",
        "gmgan_digits_global",
        "ssgan_moving_mnist_t4",
        "ssgan_moving_mnist_t4_global",
    }
    for name, overrides, snippet in snippets:
        spec = ggdsl.load_spec(resolve_spec_path(name), overrides=overrides.split())
        printed = explain(spec) + "\n"
        assert snippet in printed, f"concepts.md: the snippet of `ggdsl explain {name}{overrides}` is stale"


def test_concepts_pictures_are_drawn_by_ggdsl_graph():
    text = (DOCS / "concepts.md").read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\((img/[\w.-]+\.svg)\)", text)
    assert pictures == [
        "img/gmgan_digits.svg",
        "img/ssgan_moving_mnist_t4.svg",
        "img/ssgan_moving_mnist_t4_plate.svg",
        "img/gmgan_digits_global.svg",
        "img/ssgan_moving_mnist_t4_global.svg",
    ]
    for picture in pictures:
        svg = (DOCS / picture).read_text(encoding="utf-8")
        assert svg.lstrip().startswith(("<svg", "<?xml")) and "q(Z | X)" in svg and "discriminators" in svg
    plate = (DOCS / "img/ssgan_moving_mnist_t4_plate.svg").read_text(encoding="utf-8")
    assert "t = 1..4" in plate and ">v[2]<" not in plate
    assert ">v[2]<" in (DOCS / "img/ssgan_moving_mnist_t4.svg").read_text(encoding="utf-8")


# -- every page ------------------------------------------------------------------------------------


def test_links_and_pictures_resolve():
    pages = [*DOCS.glob("*.md"), ROOT / "README.md"]
    assert {p.name for p in DOCS.glob("*.md")} >= {"tutorial.md", "concepts.md", "reference.md", "extending.md"}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#")):
                continue
            path = target.split("#")[0]
            assert (page.parent / path).exists(), f"{page.name}: broken link {target}"
