"""Pictures of p, q and the discriminator attachments, side by side.

``.dot`` files are written as text; ``.svg`` / ``.png`` are rendered by Graphviz's ``dot``
when it is on PATH and by matplotlib otherwise. The time plate is drawn unrolled
(``v[1]..v[T]``) or folded into a plate (one node per template, a box labelled t = 1..T).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx

from ggdsl.errors import GGDSLError
from ggdsl.factorize import Analysis, analyze
from ggdsl.spec.ir import Spec

FORMATS = (".dot", ".svg", ".png", ".pdf")


def _panels(spec: Spec, analysis: Analysis, plate: bool) -> dict[str, nx.DiGraph]:
    """The three graphs to draw; with ``plate``, copies of a template are folded into one."""

    def name(node: str, *, keep_first: bool = True) -> str:
        """A node's label: unrolled, or its template on the plate (p keeps a `first:` step apart)."""
        if not plate or analysis.steps[node] is None:
            return node
        return analysis.templates[node] + ("[1]" if keep_first and node in analysis.first else "")

    def offset(parent: str, child: str) -> str:
        """On the plate, an edge between different steps is labelled with the offset."""
        a, b = analysis.steps[parent], analysis.steps[child]
        if not plate or a is None or b is None or a == b:
            return ""
        return f"t{a - b:+d}"

    observed = set(analysis.observed)
    p, q, d = nx.DiGraph(), nx.DiGraph(), nx.DiGraph()
    for node in analysis.nodes:
        attrs = {"observed": node in observed, "plate": plate and analysis.steps[node] is not None}
        p.add_node(name(node), **attrs)
        d.add_node(name(node), **attrs, kind="variable")
        q.add_node(name(node, keep_first=False), **attrs)
    for node, parents in analysis.p_parents.items():
        for parent in parents:
            p.add_edge(name(parent), name(node), label=offset(parent, node))
    for node, parents in analysis.q_parents.items():
        for parent in parents:
            q.add_edge(
                name(parent, keep_first=False),
                name(node, keep_first=False),
                label=offset(parent, node),
                exact=node in analysis.exact,
            )
    factors = analysis.factors
    if spec.objective.divergence == "global":
        d.add_node("D(global)", kind="factor")
        for node in analysis.nodes:
            d.add_edge("D(global)", name(node))
    else:
        for factor in factors:
            label = f"D({factor.group})"
            d.add_node(label, kind="factor")
            for var in factor.variables:
                d.add_edge(label, name(var))
    return {"p(X, Z)": p, "q(Z | X)": q, "discriminators": d}


def to_dot(spec: Spec, analysis: Analysis | None = None, *, plate: bool = False) -> str:
    """Graphviz DOT text with one cluster per panel."""
    analysis = analysis or analyze(spec)
    lines = [f'digraph "{spec.name}" {{', "  rankdir=TB; compound=true;", '  node [fontname="Helvetica"];']
    for index, (title, graph) in enumerate(_panels(spec, analysis, plate).items()):
        lines.append(f'  subgraph cluster_{index} {{ label="{title}";')
        for node, attrs in graph.nodes(data=True):
            style = (
                "shape=box,style=filled,fillcolor=black,fontcolor=white,fontsize=10"
                if attrs.get("kind") == "factor"
                else ("shape=circle,style=filled,fillcolor=gray80" if attrs.get("observed") else "shape=circle")
            )
            lines.append(f'    "{index}:{node}" [label="{node}",{style}];')
        for a, b, attrs in graph.edges(data=True):
            extra = ",arrowhead=none" if graph.nodes[a].get("kind") == "factor" else ""
            if attrs.get("exact"):
                extra += ",style=dashed"
            if attrs.get("label"):
                extra += f',label="{attrs["label"]}"'
            lines.append(f'    "{index}:{a}" -> "{index}:{b}" [{extra.lstrip(",")}];')
        if plate and spec.time is not None:
            inside = [n for n, a in graph.nodes(data=True) if a.get("plate")]
            if inside:
                members = " ".join(f'"{index}:{n}";' for n in inside)
                lines.append(f'    subgraph cluster_plate_{index} {{ label="t = 1..{spec.time.steps}"; {members} }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _matplotlib(spec: Spec, analysis: Analysis, path: Path, plate: bool) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    panels = _panels(spec, analysis, plate)
    width = max(4.0, 1.2 * max(len(g) for g in panels.values()) ** 0.8)
    figure = Figure(figsize=(3 * width, width))
    FigureCanvasAgg(figure)
    for axis, (title, graph) in zip(figure.subplots(1, 3), panels.items(), strict=True):
        if spec.time is not None and not plate:
            # Unrolled time: one column per step (globals at column 0), one row per template.
            rows = {name: -index for index, name in enumerate(spec.model)}
            positions = {
                n: (float(analysis.steps[n] or 0), float(rows[analysis.templates[n]]))
                for n in graph
                if n in analysis.steps
            }
        else:
            source = panels["p(X, Z)"] if title == "discriminators" else graph
            layered = nx.DiGraph()
            layered.add_nodes_from(graph)
            # Layers follow same-step edges only; a folded time edge (v[t-1] -> v) would be a loop.
            layered.add_edges_from(
                (a, b) for a, b, attrs in source.edges(data=True) if a != b and not attrs.get("label")
            )
            for layer, nodes in enumerate(nx.topological_generations(layered)):
                for node in nodes:
                    layered.nodes[node]["layer"] = layer
            positions = nx.multipartite_layout(layered, subset_key="layer", align="horizontal", scale=1.0)
            positions = {n: (x, -y) for n, (x, y) in positions.items()}
        if title == "discriminators":
            for factor in (n for n, a in graph.nodes(data=True) if a.get("kind") == "factor"):
                members = list(graph.successors(factor))
                xs = [positions[m][0] for m in members]
                ys = [positions[m][1] for m in members]
                positions[factor] = (sum(xs) / len(xs) + 0.15, sum(ys) / len(ys) + 0.05)
        variables = [n for n, a in graph.nodes(data=True) if a.get("kind") != "factor"]
        factors = [n for n, a in graph.nodes(data=True) if a.get("kind") == "factor"]
        colours = ["#bbbbbb" if graph.nodes[n].get("observed") else "white" for n in variables]
        nx.draw_networkx_nodes(
            graph, positions, nodelist=variables, node_color=colours, edgecolors="black", node_size=900, ax=axis
        )
        if factors:
            nx.draw_networkx_nodes(
                graph, positions, nodelist=factors, node_shape="s", node_color="black", node_size=250, ax=axis
            )
        nx.draw_networkx_labels(graph, positions, labels={n: n for n in variables}, font_size=8, ax=axis)
        for factor in factors:
            x, y = positions[factor]
            axis.annotate(factor, (x, y), textcoords="offset points", xytext=(8, 6), fontsize=7)
        styles = ["dashed" if a.get("exact") else "solid" for *_, a in graph.edges(data=True)]
        if title == "discriminators":
            nx.draw_networkx_edges(graph, positions, ax=axis, arrows=False, style=styles)
        else:
            nx.draw_networkx_edges(
                graph, positions, ax=axis, arrows=True, node_size=900, arrowstyle="-|>", style=styles
            )
            labels = {(a, b): attrs["label"] for a, b, attrs in graph.edges(data=True) if attrs.get("label")}
            if labels:
                nx.draw_networkx_edge_labels(graph, positions, edge_labels=labels, font_size=7, ax=axis)
        if plate and spec.time is not None:
            inside = [positions[n] for n, a in graph.nodes(data=True) if a.get("plate")]
            if inside:
                xs, ys = zip(*inside, strict=True)
                pad = 0.25
                axis.add_patch(
                    Rectangle(
                        (min(xs) - pad, min(ys) - pad),
                        max(xs) - min(xs) + 2 * pad,
                        max(ys) - min(ys) + 2 * pad,
                        fill=False,
                        linestyle="--",
                    )
                )
                axis.text(
                    max(xs) + pad, min(ys) - pad, f"t = 1..{spec.time.steps}", ha="right", va="bottom", fontsize=8
                )
        axis.set_title(title)
        axis.margins(0.25)
        axis.set_axis_off()
    figure.suptitle(spec.name)
    figure.savefig(path)


def draw(spec: Spec, path: str | Path, *, plate: bool = False, analysis: Analysis | None = None) -> Path:
    """Write the picture of p, q and the discriminators to ``path`` (.dot, .svg, .png, .pdf)."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise GGDSLError(f"{path}: unsupported picture format '{path.suffix}' (known: {', '.join(FORMATS)})")
    analysis = analysis or analyze(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    dot = to_dot(spec, analysis, plate=plate)
    if path.suffix == ".dot":
        path.write_text(dot)
    elif shutil.which("dot"):
        subprocess.run(["dot", f"-T{path.suffix[1:]}", "-o", str(path)], input=dot.encode(), check=True)
    else:
        _matplotlib(spec, analysis, path, plate)
    return path
