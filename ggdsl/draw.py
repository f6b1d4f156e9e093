"""Pictures of p, q and the discriminator attachments, side by side.

``.dot`` files are written as text; ``.svg`` / ``.png`` / ``.pdf`` are rendered by
Graphviz's ``dot`` when it is on PATH; otherwise ``.svg`` is written directly and ``.png`` /
``.pdf`` by matplotlib. The time plate is drawn unrolled
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


def _positions(
    spec: Spec, analysis: Analysis, plate: bool, panels: dict[str, nx.DiGraph], title: str, graph: nx.DiGraph
) -> dict[str, tuple[float, float]]:
    """Where each node of one panel goes (y grows upwards)."""
    if spec.time is not None and not plate:
        # Unrolled time: one column per step (globals at column 0), one row per template.
        rows = {name: -index for index, name in enumerate(spec.model)}
        positions = {
            n: (float(analysis.steps[n] or 0), float(rows[analysis.templates[n]])) for n in graph if n in analysis.steps
        }
    else:
        source = panels["p(X, Z)"] if title == "discriminators" else graph
        layered = nx.DiGraph()
        layered.add_nodes_from(graph)
        # Layers follow same-step edges only; a folded time edge (v[t-1] -> v) would be a loop.
        layered.add_edges_from((a, b) for a, b, attrs in source.edges(data=True) if a != b and not attrs.get("label"))
        for layer, nodes in enumerate(nx.topological_generations(layered)):
            for node in nodes:
                layered.nodes[node]["layer"] = layer
        laid = nx.multipartite_layout(layered, subset_key="layer", align="horizontal", scale=1.0)
        positions = {n: (float(x), -float(y)) for n, (x, y) in laid.items()}
    if title == "discriminators":
        for factor in (n for n, a in graph.nodes(data=True) if a.get("kind") == "factor"):
            members = list(graph.successors(factor))
            xs = [positions[m][0] for m in members]
            ys = [positions[m][1] for m in members]
            positions[factor] = (sum(xs) / len(xs) + 0.15, sum(ys) / len(ys) + 0.05)
    return positions


def _svg(spec: Spec, analysis: Analysis, path: Path, plate: bool) -> None:
    """An SVG written directly (no matplotlib import, so `ggdsl graph -o x.svg` stays fast)."""
    from html import escape

    panels = _panels(spec, analysis, plate)
    panel_w, panel_h, margin, radius = 420.0, 420.0, 50.0, 18.0
    parts = []
    for index, (title, graph) in enumerate(panels.items()):
        positions = _positions(spec, analysis, plate, panels, title, graph)
        xs = [x for x, _ in positions.values()] or [0.0]
        ys = [y for _, y in positions.values()] or [0.0]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0

        def at(node, xs=xs, ys=ys, span_x=span_x, span_y=span_y, positions=positions, index=index):
            x, y = positions[node]
            return (
                index * panel_w + margin + (x - min(xs)) / span_x * (panel_w - 2 * margin),
                margin + 30 + (max(ys) - y) / span_y * (panel_h - 2 * margin - 30),
            )

        parts.append(
            f'<text x="{index * panel_w + panel_w / 2}" y="30" text-anchor="middle" '
            f'font-size="16">{escape(title)}</text>'
        )
        for a, b, attrs in graph.edges(data=True):
            (x1, y1), (x2, y2) = at(a), at(b)
            factor_edge = graph.nodes[a].get("kind") == "factor"
            dash = ' stroke-dasharray="5,4"' if attrs.get("exact") else ""
            marker = "" if factor_edge else ' marker-end="url(#arrow)"'
            length = max(((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5, 1e-6)
            shorten = 0.0 if factor_edge else radius
            x2s, y2s = x2 - (x2 - x1) * shorten / length, y2 - (y2 - y1) * shorten / length
            parts.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2s:.1f}" y2="{y2s:.1f}" stroke="black"{dash}{marker}/>'
            )
            if attrs.get("label"):
                parts.append(
                    f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 4:.1f}" font-size="10" '
                    f'text-anchor="middle">{escape(attrs["label"])}</text>'
                )
        for node, attrs in graph.nodes(data=True):
            x, y = at(node)
            if attrs.get("kind") == "factor":
                parts.append(f'<rect x="{x - 7:.1f}" y="{y - 7:.1f}" width="14" height="14" fill="black"/>')
                parts.append(f'<text x="{x + 10:.1f}" y="{y - 8:.1f}" font-size="10">{escape(node)}</text>')
            else:
                fill = "#bbbbbb" if attrs.get("observed") else "white"
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fill}" stroke="black"/>')
                parts.append(
                    f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="11" text-anchor="middle">{escape(node)}</text>'
                )
        if plate and spec.time is not None:
            inside = [at(n) for n, a in graph.nodes(data=True) if a.get("plate")]
            if inside:
                px, py = [p[0] for p in inside], [p[1] for p in inside]
                x0, y0 = min(px) - 35, min(py) - 35
                parts.append(
                    f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(px) - min(px) + 70:.1f}" '
                    f'height="{max(py) - min(py) + 70:.1f}" fill="none" stroke="black" '
                    'stroke-dasharray="6,4"/>'
                )
                parts.append(
                    f'<text x="{max(px) + 30:.1f}" y="{max(py) + 30:.1f}" font-size="10" '
                    f'text-anchor="end">t = 1..{spec.time.steps}</text>'
                )
    width, height = 3 * panel_w, panel_h + 20
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="Helvetica, Arial, sans-serif">\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>\n'
        f'<rect width="100%" height="100%" fill="white"/>\n'
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="13">{escape(spec.name)}</text>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
    )


def _matplotlib(spec: Spec, analysis: Analysis, path: Path, plate: bool) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    panels = _panels(spec, analysis, plate)
    width = max(4.0, 1.2 * max(len(g) for g in panels.values()) ** 0.8)
    figure = Figure(figsize=(3 * width, width))
    FigureCanvasAgg(figure)
    for axis, (title, graph) in zip(figure.subplots(1, 3), panels.items(), strict=True):
        positions = _positions(spec, analysis, plate, panels, title, graph)
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
    elif path.suffix == ".svg":
        _svg(spec, analysis, path, plate)
    else:
        _matplotlib(spec, analysis, path, plate)
    return path
