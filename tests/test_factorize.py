"""Graph analysis: golden structures for GMGAN and SSGAN, properties on random DAGs."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggdsl import analyze, load_spec
from ggdsl.graph import markov_blanket, unroll
from ggdsl.spec.builder import ModelBuilder

GMGAN = """\
name: gmgan
model:
  k: {type: categorical, classes: 10}
  h: {type: normal, shape: [16], given: [k], net: linear}
  x: {type: implicit, shape: [8, 8, 1], given: [h], net: mlp_generator, observed: true}
"""

SSGAN_T3 = """\
name: ssgan
time: {steps: 3}
model:
  h: {type: normal, shape: [16]}
  v: {type: implicit, steps: true, shape: [4], given: ["v[t-1]"], net: transition, noise: 4,
      first: {type: normal, shape: [4]}}
  x: {type: implicit, steps: true, observed: true, shape: [8, 8, 1], given: [h, v], net: mlp_generator}
"""


def test_gmgan_golden():
    a = analyze(load_spec(GMGAN))
    assert a.p_parents == {"k": (), "h": ("k",), "x": ("h",)}
    assert a.q_parents == {"h": ("x",), "k": ("h",)}
    assert a.order == ("h", "k")
    assert a.exact == a.mixtures == ("k",)
    assert [(f.name, f.variables, f.group) for f in a.factors] == [
        ("h|k", ("h", "k"), "h|k"),
        ("x|h", ("x", "h"), "x|h"),
    ]


def test_gmgan_mean_field_has_no_exact_posterior():
    a = analyze(load_spec(GMGAN), family="mean_field")
    assert a.q_parents == {"h": ("x",), "k": ("x",)}
    assert a.exact == a.mixtures == ()  # q(k | x) has no closed form


def test_ssgan_unrolled_graph():
    a = analyze(load_spec(SSGAN_T3))
    assert a.p_parents == {
        "h": (),
        "v[1]": (),
        "v[2]": ("v[1]",),
        "v[3]": ("v[2]",),
        "x[1]": ("h", "v[1]"),
        "x[2]": ("h", "v[2]"),
        "x[3]": ("h", "v[3]"),
    }
    assert a.observed == ("x[1]", "x[2]", "x[3]")
    assert a.first == frozenset({"v[1]"})


def test_ssgan_inverse_factorization():
    a = analyze(load_spec(SSGAN_T3))
    assert a.order == ("v[3]", "v[2]", "v[1]", "h")
    assert a.q_parents == {
        "v[3]": ("x[3]",),
        "v[2]": ("x[2]", "v[3]"),
        "v[1]": ("x[1]", "v[2]"),
        "h": ("x[1]", "x[2]", "x[3]", "v[3]", "v[2]", "v[1]"),
    }
    assert a.q_groups == {"v[3]": "v|x", "v[2]": "v|x,v[t+1]", "v[1]": "v|x,v[t+1]", "h": "h|x,v"}


def test_ssgan_mean_field():
    a = analyze(load_spec(SSGAN_T3), family="mean_field")
    assert a.q_parents == {
        "v[3]": ("x[3]",),
        "v[2]": ("x[2]",),
        "v[1]": ("x[1]",),
        "h": ("x[1]", "x[2]", "x[3]"),
    }
    assert a.q_groups == {"v[3]": "v|x", "v[2]": "v|x", "v[1]": "v|x", "h": "h|x"}


def test_ssgan_factors_and_groups():
    a = analyze(load_spec(SSGAN_T3))
    groups = a.groups()
    assert list(groups) == ["v|v[t-1]", "x|h,v"]
    assert [f.variables for f in groups["x|h,v"]] == [
        ("x[1]", "h", "v[1]"),
        ("x[2]", "h", "v[2]"),
        ("x[3]", "h", "v[3]"),
    ]
    assert [f.variables for f in groups["v|v[t-1]"]] == [("v[2]", "v[1]"), ("v[3]", "v[2]")]
    assert all(f.name == f.group for f in a.factors)


def test_markov_blanket():
    graph = unroll(load_spec(SSGAN_T3))
    assert markov_blanket(graph, "v[2]") == {"v[1]", "v[3]", "x[2]", "h"}
    assert markov_blanket(graph, "h") == {"x[1]", "x[2]", "x[3]", "v[1]", "v[2]", "v[3]"}


# -- properties on random DAGs -----------------------------------------------------------------


@st.composite
def random_models(draw):
    n = draw(st.integers(2, 8))
    names = [f"n{i}" for i in range(n)]
    parents = {}
    for i, name in enumerate(names):
        parents[name] = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
    observed = draw(st.sets(st.sampled_from(names), min_size=1, max_size=n))
    return names, parents, observed


def _spec(names, parents, observed):
    b = ModelBuilder("random")
    for name in names:
        if parents[name]:
            b.implicit(name, shape=[2], given=parents[name], net="mlp_generator", observed=name in observed)
        else:
            b.normal(name, shape=[2], observed=name in observed)
    if observed:
        b.data(source="toy", observe={name: "x" for name in observed})
    return b.build()


@settings(max_examples=150, deadline=None)
@given(random_models(), st.sampled_from(["inverse", "mean_field"]))
def test_recognition_model_properties(model, family):
    names, parents, observed = model
    a = analyze(_spec(names, parents, observed), family=family)
    latents = [n for n in names if n not in observed]
    assert sorted(a.q_parents) == sorted(latents)  # every latent exactly once
    assert sorted(a.order) == sorted(latents)
    q = nx.DiGraph()
    q.add_nodes_from(names)
    placed = set(observed)
    for z in a.order:
        assert set(a.q_parents[z]) <= placed  # drawn from variables placed before it
        placed.add(z)
        q.add_edges_from((p, z) for p in a.q_parents[z])
    assert nx.is_directed_acyclic_graph(q)
    if family == "mean_field":
        assert all(set(ps) <= set(observed) for ps in a.q_parents.values())
    else:
        graph = unroll(_spec(names, parents, observed))
        for z in a.order:
            assert set(a.q_parents[z]) <= markov_blanket(graph, z)
    # factors: every family {v} ∪ pa(v) is covered, and none lies inside another
    sets = [frozenset(f.variables) for f in a.factors]
    for name in names:
        family_set = frozenset([name, *parents[name]])
        assert any(family_set <= s for s in sets)
    assert not any(s < t for s in sets for t in sets)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_tying_groups_do_not_depend_on_t(steps):
    a = analyze(load_spec(SSGAN_T3.replace("steps: 3", f"steps: {steps}")))
    expected = ["v|v[t-1]", "x|h,v"] if steps > 1 else ["x|h,v"]
    assert list(a.groups()) == expected
