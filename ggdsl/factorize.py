"""The recognition model q and the local factors, derived from p.

Worked example, GMGAN: p is k -> h -> x with x observed. Inverse factorization
(Algorithm 1 of the paper) orders the latents from leaves to roots, (h, k), and starts H
with the observed x. h joins H with parents MB(h) ∩ H = {k, x} ∩ {x} = {x}; k joins with
MB(k) ∩ H = {h} ∩ {x, h} = {h}. So q(h, k | x) = q(h | x) q(k | h), and q(k | h) is the
exact mixture posterior. The local factors of p are A = {v} ∪ pa(v): {k}, {h, k},
{x, h}; {k} lies inside {h, k} and is dropped, leaving the discriminators D(x, h) and
D(h, k)::

    >>> from ggdsl import analyze, load_spec
    >>> a = analyze(load_spec('''
    ... name: gmgan
    ... model:
    ...   k: {type: categorical, classes: 10}
    ...   h: {type: normal, shape: [16], given: [k], net: linear}
    ...   x: {type: implicit, shape: [8, 8, 1], given: [h], net: mlp_generator, observed: true}
    ... '''))
    >>> a.q_parents
    {'h': ('x',), 'k': ('h',)}
    >>> [f.name for f in a.factors], a.exact
    (['h|k', 'x|h'], ('k',))

With a time plate, per-step variables are unrolled first (``v[1]..v[T]``); factors of
one template share a group (one discriminator), named with same-step indices dropped and
the previous step written ``[t-1]``: ``x|h,v``, ``v|v[t-1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ggdsl.graph import markov_blanket, topological_order, unroll
from ggdsl.spec.ir import Spec


@dataclass(frozen=True)
class Factor:
    """A local factor A = {child} ∪ pa(child) of p, with its discriminator group."""

    name: str
    variables: tuple[str, ...]  # unrolled names, the child first, then its parents in order
    group: str  # factors of one group share one discriminator
    child: str
    step: int | None = None


@dataclass(frozen=True)
class Analysis:
    """Everything the later stages need to know about the graph, as plain data."""

    family: str
    nodes: tuple[str, ...]  # all unrolled nodes, topological order of p
    observed: tuple[str, ...]
    latent: tuple[str, ...]
    templates: dict[str, str]  # unrolled node -> spec variable
    steps: dict[str, int | None]  # unrolled node -> its step
    p_parents: dict[str, tuple[str, ...]]
    q_parents: dict[str, tuple[str, ...]]  # latents only, in the order they join q
    q_groups: dict[str, str]  # latent -> extractor group (copies with one structure share one)
    order: tuple[str, ...]  # the leaves-to-roots order of the latents
    exact: tuple[str, ...]  # latents whose q is the exact posterior (no network)
    # Mixture components with a closed-form posterior p(k | h); ``exact`` holds these less
    # those that ``inference.nets`` gives a network of their own (a learned q(k | h)).
    mixtures: tuple[str, ...]
    factors: tuple[Factor, ...]
    first: frozenset[str] = field(default_factory=frozenset)  # nodes drawn by a `first:` definition

    def groups(self) -> dict[str, tuple[Factor, ...]]:
        """Factors by discriminator group, in order of first appearance."""
        out: dict[str, list[Factor]] = {}
        for factor in self.factors:
            out.setdefault(factor.group, []).append(factor)
        return {k: tuple(v) for k, v in out.items()}


def _relative(name: str, step: int | None, steps: dict[str, int | None], templates: dict[str, str]) -> str:
    """How ``name`` reads from a node at ``step``: ``v``, ``v[t-1]``, ``v[t+1]``, ``h``."""
    template, other = templates[name], steps[name]
    if other is None or step is None or other == step:
        return template
    offset = other - step
    return f"{template}[t{offset:+d}]"


def relative_inputs(
    child: str,
    parents: tuple[str, ...],
    steps: dict[str, int | None],
    templates: dict[str, str],
    first: frozenset | set = frozenset(),
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The named inputs a network of ``child`` reads, each with the unrolled nodes behind it.

    A node reads a parent of the same or no step by its template name (``h``, ``v``), one
    of another step relatively (``v[t-1]``). A global node reading every step of a
    per-step template reads them stacked as one input under the template name (``x``);
    a global node reading only some steps names them absolutely (``x[2]``).

    >>> steps = {"h": None, "x[1]": 1, "x[2]": 2}
    >>> templates = {"h": "h", "x[1]": "x", "x[2]": "x"}
    >>> relative_inputs("h", ("x[1]", "x[2]"), steps, templates)
    (('x', ('x[1]', 'x[2]')),)
    """
    step = steps[child]
    if step is None:
        per_template: dict[str, list[str]] = {}
        for parent in parents:
            if steps[parent] is not None:
                per_template.setdefault(templates[parent], []).append(parent)
        all_steps = {t: sorted(n for n in steps if templates[n] == t) for t in per_template}
        out: list[tuple[str, tuple[str, ...]]] = []
        seen = set()
        for parent in parents:
            if steps[parent] is None:
                out.append((parent, (parent,)))
                continue
            template = templates[parent]
            if template in seen:
                continue
            nodes = per_template[template]
            if sorted(nodes) == all_steps[template]:
                seen.add(template)
                ordered = tuple(sorted(nodes, key=lambda n: steps[n]))
                out.append((template, ordered))
            else:
                out.append((parent, (parent,)))
        return tuple(out)
    return tuple((_relative(p, step, steps, templates), (p,)) for p in parents)


def factor_name(child: str, parents: tuple[str, ...], steps: dict, templates: dict, first: bool) -> str:
    head = child if first else templates[child]
    if not parents:
        return head
    return head + "|" + ",".join(name for name, _ in relative_inputs(child, parents, steps, templates))


def inverse_factorization(graph: nx.DiGraph, observed: tuple[str, ...], latent_order: tuple[str, ...]) -> dict:
    """Algorithm 1: each latent, leaves to roots, joins H with parents MB_p(z) ∩ H."""
    placed: list[str] = list(observed)
    q_parents: dict[str, tuple[str, ...]] = {}
    for latent in latent_order:
        blanket = markov_blanket(graph, latent)
        q_parents[latent] = tuple(n for n in placed if n in blanket)
        placed.append(latent)
    return q_parents


def mean_field(observed: tuple[str, ...], latent_order: tuple[str, ...], steps: dict) -> dict:
    """Each latent from the observed variables only; a per-step latent from its own step's."""
    q_parents = {}
    for latent in latent_order:
        step = steps[latent]
        q_parents[latent] = tuple(n for n in observed if step is None or steps[n] is None or steps[n] == step)
    return q_parents


def exact_posteriors(spec: Spec, graph: nx.DiGraph, q_parents: dict, templates: dict) -> tuple[str, ...]:
    """Latents whose q(z | pa_H(z)) has a closed form: a root categorical whose only child is
    a ``normal`` with ``net: linear`` and no other parent, which is also z's only q-parent.
    Whether q uses it is :func:`analyze`'s to say (not where ``inference.nets`` names z)."""
    exact = []
    for latent, parents in q_parents.items():
        variable = graph.nodes[latent]["node"].variable
        if variable.type != "categorical" or variable.given or variable.shape:
            continue
        children = list(graph.successors(latent))
        if len(children) != 1 or parents != (children[0],):
            continue
        child = graph.nodes[children[0]]["node"].variable
        if child.type == "normal" and child.net == "linear" and len(child.given) == 1:
            exact.append(latent)
    return tuple(exact)


def local_factors(graph: nx.DiGraph, order: tuple[str, ...], steps: dict, templates: dict, first: set) -> tuple:
    """A = {v} ∪ pa(v) for every node, dropping any A inside another."""
    candidates = []
    for node in order:
        parents = graph.nodes[node]["parents"]
        candidates.append((node, parents, frozenset((node, *parents))))
    factors = []
    for node, parents, members in candidates:
        if any(members < other for _, _, other in candidates):
            continue
        name = factor_name(node, parents, steps, templates, node in first)
        factors.append(Factor(name, (node, *parents), name, node, steps[node]))
    return tuple(factors)


def marginal_factors(marginals: tuple[str, ...], nodes: tuple[str, ...], steps: dict, templates: dict) -> tuple:
    """A = {v} for each observed variable named in ``objective.marginals``, after the local factors.

    Each unrolled node of the variable is a factor; the steps of a time variable share one
    discriminator, as its local factors do.
    """
    factors = []
    for node in nodes:
        if templates[node] in marginals:
            name = factor_name(node, (), steps, templates, False)
            factors.append(Factor(name, (node,), name, node, steps[node]))
    return tuple(factors)


def analyze(spec: Spec, family: str | None = None) -> Analysis:
    """Analyse a spec's graph: p and q parents, exact posteriors, local factors.

    ``family`` overrides ``spec.inference.family`` (``inverse`` or ``mean_field``).
    """
    family = family or spec.inference.family
    graph = unroll(spec)
    nodes = topological_order(graph)
    info = {n: graph.nodes[n]["node"] for n in nodes}
    templates = {n: info[n].template for n in nodes}
    steps = {n: info[n].step for n in nodes}
    first = {n for n in nodes if info[n].first}
    observed = tuple(n for n in nodes if info[n].observed)
    latent_topological = tuple(n for n in nodes if not info[n].observed)
    order = tuple(reversed(latent_topological))
    if family == "inverse":
        q_parents = inverse_factorization(graph, observed, order)
    elif family == "mean_field":
        q_parents = mean_field(observed, order, steps)
    else:
        raise ValueError(f"unknown inference family {family!r} (known: inverse, mean_field)")
    # Extractors are shared by structure of q alone: a first step of p reads like the others.
    q_groups = {z: factor_name(z, parents, steps, templates, False) for z, parents in q_parents.items()}
    mixtures = exact_posteriors(spec, graph, q_parents, templates)
    return Analysis(
        family=family,
        nodes=nodes,
        observed=observed,
        latent=latent_topological,
        templates=templates,
        steps=steps,
        p_parents={n: graph.nodes[n]["parents"] for n in nodes},
        q_parents=q_parents,
        q_groups=q_groups,
        order=order,
        exact=tuple(z for z in mixtures if templates[z] not in spec.inference.nets),
        mixtures=mixtures,
        factors=local_factors(graph, nodes, steps, templates, first)
        + marginal_factors(spec.objective.marginals, nodes, steps, templates),
        first=frozenset(first),
    )
