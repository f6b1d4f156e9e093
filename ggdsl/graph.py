"""The generative model p as a networkx DAG, with the time plate unrolled.

A per-step variable ``v`` of a spec with ``time: {steps: 3}`` becomes the nodes ``v[1]``,
``v[2]``, ``v[3]``; ``v[1]`` is drawn by the variable's ``first:`` definition when it has
one. Every node carries its template (the spec variable), its step, and its parents in
the order of ``given``::

    >>> from ggdsl import load_spec
    >>> from ggdsl.graph import unroll
    >>> spec = load_spec('''
    ... name: chain
    ... time: {steps: 3}
    ... model:
    ...   v: {type: normal, steps: true, shape: [2], given: ["v[t-1]"], net: linear,
    ...       first: {type: normal}}
    ...   x: {type: implicit, steps: true, shape: [4], given: [v], net: mlp_generator,
    ...       observed: true}
    ... ''')
    >>> sorted(unroll(spec).predecessors("v[3]"))
    ['v[2]']
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ggdsl.errors import GraphError, Problem
from ggdsl.spec.ir import Spec, Variable


@dataclass(frozen=True)
class Node:
    """One node of the unrolled graph."""

    name: str
    template: str
    step: int | None
    variable: Variable  # the definition that draws it (``first`` for step 1 where given)
    observed: bool
    first: bool = False  # drawn by the template's ``first:`` definition


def node_name(template: str, step: int | None) -> str:
    """``node_name("v", 2) == "v[2]"``; a global variable keeps its name."""
    return template if step is None else f"{template}[{step}]"


def unroll(spec: Spec) -> nx.DiGraph:
    """The DAG of p: one node per variable and step; node attribute ``node`` is a :class:`Node`,
    ``parents`` the parent names in ``given`` order."""
    graph = nx.DiGraph()
    steps = spec.time.steps if spec.time is not None else 1
    order: dict[str, tuple[int, int]] = {}
    for index, var in enumerate(spec.variables):
        for step in range(1, steps + 1) if var.steps else [None]:
            definition = var.first if (step == 1 and var.first is not None) else var
            name = node_name(var.name, step)
            graph.add_node(
                name,
                node=Node(name, var.name, step, definition, var.observed, definition is not var),
                parents=(),
                sort_key=(index, step or 0),
            )
            order[name] = (index, step or 0)
    for name, data in list(graph.nodes(data=True)):
        node: Node = data["node"]
        parents = []
        for ref in node.variable.given:
            parent_var = spec.model[ref.name]
            if not parent_var.steps:
                parent = ref.name
            else:
                parent_step = (node.step or 1) - ref.lag
                if parent_step < 1:
                    raise GraphError(
                        [Problem("<spec>", None, f"model.{node.template}.given", f"'{name}' reads step {parent_step}")]
                    )
                parent = node_name(ref.name, parent_step)
            parents.append(parent)
            graph.add_edge(parent, name)
        graph.nodes[name]["parents"] = tuple(parents)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " -> ".join(edge[0] for edge in nx.find_cycle(graph))
        raise GraphError([Problem("<spec>", None, "model", f"the unrolled model has a cycle: {cycle}")])
    return graph


def topological_order(graph: nx.DiGraph) -> tuple[str, ...]:
    """A deterministic topological order: declaration order, then step, breaks ties."""
    return tuple(nx.lexicographical_topological_sort(graph, key=lambda n: graph.nodes[n]["sort_key"]))


def markov_blanket(graph: nx.DiGraph, name: str) -> frozenset[str]:
    """Parents, children and the children's other parents of ``name`` in p."""
    blanket = set(graph.predecessors(name)) | set(graph.successors(name))
    for child in graph.successors(name):
        blanket |= set(graph.predecessors(child))
    blanket.discard(name)
    return frozenset(blanket)
