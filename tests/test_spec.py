"""The spec stage: every SPEC example loads, validates and round-trips; errors are precise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggdsl import GGDSLError, ModelBuilder, SpecError, load_spec
from ggdsl.cli import BUNDLED, main
from ggdsl.spec.ir import ParentRef

GMGAN = """\
name: gmgan-mnist
data: {source: mnist, observe: {x: image}, range: [0, 1], labels: label}
model:
  k: {type: categorical, classes: 10}
  h: {type: normal, shape: [64], given: [k], net: linear}
  x: {type: implicit, shape: [28, 28, 1], given: [h], net: generator28, observed: true}
inference:
  family: inverse
  discrete: gumbel_softmax
  temperature: 0.1
  nets: {h: encoder28}
objective:
  divergence: local
  loss: bce
  reconstruction: 0.0
  weights: uniform
  discriminators: {}
networks:
  generator28:
    - {dense: 4096, act: relu, norm: batch}
    - {reshape: [4, 4, 256]}
    - {deconv: 128, kernel: 5, stride: 2, act: relu, norm: batch}
    - {crop: [7, 7]}
    - {deconv: 64, kernel: 5, stride: 2, act: relu, norm: batch}
    - {deconv: 1, kernel: 5, stride: 2, act: sigmoid}
train:
  batch_size: 50
  steps: 200000
  optimizer: {name: adam, learning_rate: 2.0e-4, b1: 0.5, b2: 0.999}
  critic_steps: 1
  seed: 0
  log_every: 100
  eval_every: 5000
  checkpoint_every: 5000
  devices: auto
eval: [clustering_accuracy, reconstruction_mse, samples, interpolation, tsne, factor_divergences]
"""

# SPEC section 3, verbatim, in a file with a name and data.
SSGAN = """\
name: ssgan
data: {source: moving_digits, images: mnist, canvas: 64, speed: 3.6, observe: {x: video}}
time: {steps: 16}
model:
  h: {type: normal, shape: [128]}                       # content, once per video
  v:                                                    # motion state, one per frame
    type: implicit
    steps: true
    shape: [8]
    given: ["v[t-1]"]
    net: transition                                     # v_t = v_{t-1} + MLP([v_{t-1}, eps])
    noise: 8
    first: {type: normal, shape: [8]}                   # v_1 ~ N(0, I)
  x: {type: implicit, steps: true, observed: true, shape: [64, 64, 1], given: [h, v], net: frame_generator}
"""


def test_gmgan_example_loads_with_every_section():
    spec = load_spec(GMGAN)
    assert spec.name == "gmgan-mnist"
    assert [v.name for v in spec.variables] == ["k", "h", "x"]
    assert spec.model["h"].given == (ParentRef("k"),)
    assert spec.model["k"].event_shape == (10,)
    assert spec.model["x"].observed and not spec.model["h"].observed
    assert spec.networks["generator28"][3].kind == "crop"
    assert spec.networks["generator28"][0].get("norm") == "batch"
    assert spec.train.optimizer["b1"] == 0.5
    assert spec.data.range == (0.0, 1.0)
    assert spec.inference.nets["h"] == "encoder28"


@pytest.mark.parametrize("text", [GMGAN, SSGAN], ids=["gmgan", "ssgan"])
def test_round_trip_through_yaml(text):
    spec = load_spec(text)
    again = load_spec(spec.to_yaml())
    assert again == spec
    assert again.to_yaml() == spec.to_yaml()


def test_ssgan_time_example():
    spec = load_spec(SSGAN)
    v = spec.model["v"]
    assert v.steps and v.given == (ParentRef("v", 1),)
    assert v.first is not None and v.first.type == "normal" and v.first.shape == (8,)
    assert spec.time.steps == 16


def test_builder_gives_the_same_spec_as_yaml():
    b = ModelBuilder("gmgan-digits")
    k = b.categorical("k", classes=10)
    h = b.normal("h", shape=[16], given=[k], net="linear")
    b.implicit("x", shape=[8, 8, 1], given=[h], net="mlp_generator", observed=True)
    b.data(source="digits", observe={"x": "image"})
    spec = b.build()
    text = spec.to_yaml()
    assert load_spec(text) == spec
    by_yaml = load_spec(
        textwrap.dedent("""\
        name: gmgan-digits
        data: {source: digits, observe: {x: image}}
        model:
          k: {type: categorical, classes: 10}
          h: {type: normal, shape: [16], given: [k], net: linear}
          x: {type: implicit, shape: [8, 8, 1], given: [h], net: mlp_generator, observed: true}
        """)
    )
    assert by_yaml == spec


def test_builder_time_and_prev():
    b = ModelBuilder("chain")
    b.time(3)
    v = b.implicit(
        "v", shape=[2], given=[], net="transition", noise=2, steps=True, first={"type": "normal", "shape": [2]}
    )
    b._raw["model"]["v"]["given"] = [v.prev]
    b.implicit("x", shape=[4], given=[v], net="mlp_generator", steps=True, observed=True)
    spec = b.build()
    assert spec.model["v"].given == (ParentRef("v", 1),)


def test_order_in_file_does_not_matter():
    a = load_spec(
        "name: a\nmodel:\n  z: {type: normal}\n  x: {type: implicit, given: [z], net: linear, observed: true}\n"
    )
    b = load_spec(
        "name: a\nmodel:\n  x: {type: implicit, given: [z], net: linear, observed: true}\n  z: {type: normal}\n"
    )
    assert a == b


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(text)
    return [str(p) for p in info.value.problems]


def test_unknown_parent_names_path_and_line():
    errors = _errors(
        "name: a\nmodel:\n  k: {type: categorical, classes: 3}\n  h: {type: normal, given: [z], net: linear}\n"
    )
    assert errors == ["<string>:4: model.h.given[0]: unknown variable 'z' (known: k)"]


def test_all_errors_reported_at_once_with_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: bad
        colour: blue
        model:
          k: {type: categorical, classes: one}
          h: {type: normal, shape: [16], given: [k, z], net: linear}
          x: {type: implicit, shape: [8, 8, 1], given: [h], net: mlp_generator, observed: true}
        train: {batch_size: -3}
        """)
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    got = [(p.line, p.path) for p in info.value.problems]
    assert got == [(2, "colour"), (4, "model.k.classes"), (5, "model.h.given[1]"), (7, "train.batch_size")]
    assert (
        str(info.value).splitlines()[0] == f"{path}:2: colour: unknown top-level key 'colour' "
        "(known: data, eval, inference, model, name, networks, objective, time, train)"
    )


def test_cycle_names_variables_and_lines():
    errors = _errors(
        textwrap.dedent("""\
        name: cyc
        model:
          a: {type: normal, given: [c], net: linear}
          b: {type: normal, given: [a], net: linear}
          c: {type: normal, given: [b], net: linear}
        """)
    )
    assert len(errors) == 1
    assert "cycle: a -> b -> c -> a" in errors[0]
    assert "a (line 3), b (line 4), c (line 5)" in errors[0]


def test_missing_observed_in_data():
    errors = _errors(
        textwrap.dedent("""\
        name: a
        data: {source: digits, observe: {}}
        model:
          z: {type: normal}
          x: {type: implicit, given: [z], net: linear, observed: true}
        """)
    )
    assert errors == ["<string>:2: data.observe: observed variable 'x' has no data; add `x: <feature>`"]


def test_previous_step_needs_first_and_time():
    errors = _errors(
        textwrap.dedent("""\
        name: a
        time: {steps: 3}
        model:
          v: {type: implicit, steps: true, shape: [2], given: ["v[t-1]"], net: transition, noise: 2}
        """)
    )
    assert len(errors) == 1 and "model.v.first" in errors[0] and "add `first:`" in errors[0]
    errors = _errors("name: a\nmodel:\n  v: {type: normal, steps: true}\n")
    assert errors == ["<string>:3: model.v.steps: steps: true needs a time plate: add `time: {steps: T}`"]


def test_yaml_syntax_error_has_line():
    errors = _errors("name: a\nmodel:\n  k: {type: categorical\n  h: x\n")
    assert errors[0].startswith("<string>:4:") or errors[0].startswith("<string>:3:")


def test_overrides():
    spec = load_spec(GMGAN, overrides=["train.steps=500", "model.k.classes=30"])
    assert spec.train.steps == 500 and spec.model["k"].get("classes") == 30
    with pytest.raises(SpecError, match="expected key.path=value"):
        load_spec(GMGAN, overrides=["train.steps"])


def test_a_bad_override_is_reported_at_its_set_not_at_the_file_line_it_replaced():
    with pytest.raises(SpecError) as caught:
        load_spec(GMGAN, overrides=["objective.weights={x:1}", "train.steps=500"])
    # `{x:1}` is YAML for the key "x:1" with no value: a classic missing space.
    assert [str(p) for p in caught.value.problems] == [
        "--set objective.weights={x:1}: objective.weights.x:1: expected a number, got None"
    ]
    with pytest.raises(SpecError) as caught:  # a later --set of a parent replaces the earlier one
        load_spec(GMGAN, overrides=["train.steps=oops", "train={steps: -1}"])
    assert [str(p) for p in caught.value.problems] == ["--set train={steps: -1}: train.steps: must be >= 0, got -1"]
    with pytest.raises(SpecError) as caught:  # the rest of the file keeps its lines
        load_spec(GMGAN.replace("weights: uniform", "weights: {nope: 1.0}"), overrides=["train.steps=500"])
    assert [p.file for p in caught.value.problems] == ["<string>"] and caught.value.problems[0].line is not None


@pytest.mark.parametrize(
    ("text", "value"),
    [("6e-4", 6e-4), ("1E5", 1e5), ("-2.5e+3", -2500.0), (".5e2", 50.0), ("2.0e-4", 2e-4), ("10", 10)],
)
def test_exponent_floats_are_numbers_in_files_and_overrides(text, value):
    # PyYAML alone reads 6e-4 (no dot) as a string; specs read it as YAML 1.2 does.
    spec = load_spec(GMGAN, overrides=[f"train.optimizer.learning_rate={text}"])
    assert spec.train.optimizer["learning_rate"] == value
    assert type(spec.train.optimizer["learning_rate"]) is type(value)
    in_file = load_spec(GMGAN.replace("learning_rate: 2.0e-4", f"learning_rate: {text}"))
    assert in_file.train.optimizer["learning_rate"] == value
    assert load_spec(GMGAN, overrides=["name=6e-4x"]).name == "6e-4x"  # not a number: stays text
    named = load_spec(GMGAN, overrides=["name='1e5'"])  # a name that reads like a number, quoted
    assert named.name == "1e5" and load_spec(named.to_yaml()) == named


def test_a_word_for_an_optimiser_number_is_a_build_error_before_training():
    from ggdsl.compiled import compile_spec
    from ggdsl.errors import BuildError

    spec = load_spec(GMGAN, overrides=["train.optimizer.learning_rate=fast"])
    with pytest.raises(BuildError, match=r"train.optimizer: optax.adam\(.*learning_rate='fast'.*\) cannot update"):
        compile_spec(spec)


def test_factor_names_in_weights_are_checked():
    text = GMGAN.replace("weights: uniform", "weights: {x|h: 2.0, nope: 1.0}")
    errors = _errors(text)
    assert len(errors) == 1 and "objective.weights.nope: unknown factor 'nope' (factors: h|k, x|h)" in errors[0]
    spec = load_spec(GMGAN.replace("weights: uniform", "weights: {x|h: 2.0, h|k: 1.0}"))
    assert spec.objective.weights == {"x|h": 2.0, "h|k": 1.0}


@pytest.mark.parametrize("path", sorted(BUNDLED.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_specs_validate_and_round_trip(path):
    spec = load_spec(path)
    assert load_spec(spec.to_yaml()) == spec


def test_validate_cli_three_mistakes(tmp_path, capsys):
    path = tmp_path / "three.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: three
        model:
          k: {type: categorical, classes: 10}
          h: {type: normall, shape: [16]}
          x: {type: implicit, shape: [8, 8, 1], given: [h, q], net: mlp_generator, observed: yes_please}
        """)
    )
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"{path}:4: model.h.type: unknown type 'normall' (known: categorical, implicit, normal, uniform)",
        f"{path}:5: model.x.given[1]: unknown variable 'q' (known: h, k)",
        f"{path}:5: model.x.observed: expected true or false, got 'yes_please'",
    ]


def test_validate_cli_ok(capsys):
    assert main(["validate", "gmgan_digits"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(
        "gmgan-digits: 3 variables (1 observed), 3 nodes unrolled, q inverse (1 exact), 2 local factors in 2 groups"
    )


def test_front_end_imports_no_jax(tmp_path):
    code = (
        "import sys, ggdsl.cli as c\n"
        f"c.main(['validate', 'ssgan_moving_mnist_t16'])\n"
        f"c.main(['explain', 'gmgan_mnist'])\n"
        f"c.main(['graph', 'gmgan_mnist', '-o', r'{tmp_path / 'g.png'}'])\n"
        "bad = [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "g.png").stat().st_size > 1000


# -- fuzzing: nonsense never escapes as anything but GGDSLError ---------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
keys = st.one_of(
    st.sampled_from(
        [
            "name",
            "model",
            "data",
            "time",
            "type",
            "given",
            "shape",
            "net",
            "classes",
            "observed",
            "steps",
            "first",
            "train",
            "source",
            "observe",
            "noise",
            "std",
            "inference",
            "objective",
            "networks",
            "eval",
            "dense",
            "k",
            "h",
            "x",
            "v",
        ]
    ),
    st.text(min_size=1, max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=8))
def test_nonsense_specs_only_raise_ggdsl_error(raw):
    try:
        text = yaml.safe_dump(raw, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        load_spec(text)
    except GGDSLError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_ggdsl_error(text):
    try:
        load_spec(text + "\n")
    except GGDSLError:
        pass


def test_missing_file():
    with pytest.raises(SpecError, match="no such file"):
        load_spec(Path("/nonexistent/spec.yaml"))


def test_spec_data_section_example():
    text = GMGAN.replace(
        "data: {source: mnist, observe: {x: image}, range: [0, 1], labels: label}",
        "data:\n  source: tfds\n  name: mnist\n  observe: {x: image}\n  range: [0, 1]\n"
        "  resize: [28, 28]\n  labels: label",
    )
    spec = load_spec(text)
    assert spec.data.source == "tfds"
    assert spec.data.get("name") == "mnist" and tuple(spec.data.get("resize")) == (28, 28)
    assert load_spec(spec.to_yaml()) == spec


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=5))
def test_random_graphs_with_cycles_fail_cleanly(parent_lists):
    names = [f"v{i}" for i in range(len(parent_lists))]
    lines = ["name: g", "model:"]
    for name, parents in zip(names, parent_lists, strict=True):
        given_names = sorted({names[p % len(names)] for p in parents})
        if given_names:
            lines.append(f"  {name}: {{type: implicit, shape: [2], given: [{', '.join(given_names)}], net: linear}}")
        else:
            lines.append(f"  {name}: {{type: normal, shape: [2]}}")
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    for name, parents in zip(names, parent_lists, strict=True):
        graph.add_edges_from((names[p % len(names)], name) for p in parents)
    try:
        spec = load_spec("\n".join(lines) + "\n")
    except SpecError as error:
        assert not nx.is_directed_acyclic_graph(graph)
        assert "cycle" in str(error) or "its own parent" in str(error)
    else:
        assert nx.is_directed_acyclic_graph(graph)
        assert set(spec.model) == set(names)


@pytest.mark.parametrize("plate", [False, True])
def test_graph_svg_and_dot_name_every_node(tmp_path, plate):
    import xml.dom.minidom

    from ggdsl.draw import draw

    spec = load_spec(BUNDLED / "ssgan_moving_mnist_t4.yaml")
    svg = draw(spec, tmp_path / "g.svg", plate=plate)
    texts = {n.firstChild.data for n in xml.dom.minidom.parse(str(svg)).getElementsByTagName("text") if n.firstChild}
    expected = {"h", "v[1]", "v", "x"} if plate else {"h", *(f"{v}[{t}]" for v in "vx" for t in range(1, 5))}
    assert expected <= texts
    assert {"p(X, Z)", "q(Z | X)", "discriminators", "D(x|h,v)", "D(v|v[t-1])"} <= texts
    dot = draw(spec, tmp_path / "g.dot", plate=plate).read_text()
    assert dot.startswith('digraph "ssgan-moving-mnist-t4"') and dot.count("subgraph cluster_") >= 3


QUALITY_SPECS = sorted((Path(__file__).resolve().parent.parent / "benchmarks" / "quality").glob("*.yaml"))


@pytest.mark.parametrize("path", QUALITY_SPECS, ids=[p.stem for p in QUALITY_SPECS])
def test_benchmark_quality_specs_validate(path, capsys):
    """The specs docs/quality.md runs by path load and plan (what `ggdsl validate` checks)."""
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok: {load_spec(path).name}:")
