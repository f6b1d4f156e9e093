"""The spec reference (``docs/reference.md``), generated from the registries the loader reads.

Every table comes from the same place the spec loader checks against: node types and key
tables from :mod:`ggdsl.spec.schema`, layer kinds and presets from :mod:`ggdsl.nets.shapes`,
data sources and their keys from :mod:`ggdsl.data.registry`. So the reference lists
exactly what a spec may hold, and a test compares the committed file with this output.
Like the rest of the front end, it imports no JAX::

    python -m ggdsl.reference -o docs/reference.md

>>> text = reference_markdown()
>>> text.splitlines()[0]
'# Spec reference'
>>> "### `bernoulli`" in text      # only what is registered appears
False
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ggdsl.data import registry as data_registry
from ggdsl.nets.shapes import ACTIVATIONS, LAYER_KINDS, NORMS, PADDINGS, PRESET_RESIDUAL, PRESETS
from ggdsl.spec.schema import (
    COMMON_KEYS,
    EVAL_NAMES,
    INFERENCE_KEYS,
    NODE_TYPES,
    OBJECTIVE_KEYS,
    PRETRAIN_KEYS,
    TOP_KEYS,
    TRAIN_KEYS,
    Key,
)

#: One line per top-level key (the schema holds the names).
TOP_DOCS: dict[str, str] = {
    "name": "required; names the run folders (letters, digits, `_`, `-`, `.`)",
    "data": "where the observed variables come from: a source and its keys (see [data](#data))",
    "time": "`{steps: T}`: the time plate t = 1..T for variables with `steps: true`",
    "model": "required; the generative model p(X, Z), one entry per variable",
    "inference": "the recognition model q(Z | X)",
    "objective": "how p and q are matched: local discriminators or one global one, extra terms",
    "networks": "named layer lists, referred to by `net:` and the `nets` / `discriminators` maps",
    "train": "optimisation, logging, checkpoints, devices",
    "eval": "a list of evaluation names, run by `ggdsl eval` and at the end of training",
}

#: Keys every spec must have.
REQUIRED_TOP_KEYS = ("name", "model")

#: What each evaluation computes and what it writes (the names come from the schema).
EVAL_DOCS: dict[str, str] = {
    "clustering_accuracy": "accuracy of q's mixture component (the first categorical latent) against "
    "`data.labels` on the test split: Hungarian-matched (`clustering_accuracy`), per-cluster majority "
    "(`clustering_accuracy_majority`), and `clusters_used`",
    "reconstruction_mse": "mean squared error of x against G(E(x)) on the test split; "
    "`figures/reconstruction.png` for images",
    "samples": "`figures/samples_step<N>.png`: a grid of samples from p, one column per mixture component "
    "where there is one",
    "interpolation": "`figures/interpolation.png`: samples along straight lines between inferred codes",
    "tsne": "`figures/tsne.png`: a t-SNE of the inferred continuous code, coloured by label",
    "factor_divergences": "`factor_accuracy/<factor>`: each discriminator's accuracy telling q-side from "
    "p-side tuples on test data (0.5: the factor is matched)",
    "video_reconstruction": "per-frame reconstruction error of a video, and `figures/video_reconstruction.png`",
    "component_purity": "which class each mixture component of p draws, read by a logistic regression fitted "
    "on the labelled training split: `component_purity` (mean share of each component's main class), "
    "`component_classes`, `component_classes_covered`, `component_recovery` (share of p's samples q assigns "
    "back to their component) and `component_classifier_accuracy`",
    "motion_analogy": "content (`h`) inferred from one test video, motion (`v`) from another, "
    "`figures/motion_analogy.png`; on `moving_digits` with labels, the share of analogies a digit "
    "classifier reads as the content video's digit (`motion_analogy_content_accuracy`), as the motion "
    "video's (`motion_analogy_motion_accuracy`), and the classifier's accuracy on real test videos",
}

#: The keys of ``time:`` (checked by the loader itself).
TIME_KEYS: dict[str, str] = {"steps": "required; number of steps T (1 to 100000)"}


def _markdown(text: str) -> str:
    """reStructuredText roles and literals of docstrings, as Markdown code."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _first_paragraph(doc: str | None) -> str:
    paragraph = (doc or "").strip().split("\n\n")[0]
    return _markdown(" ".join(line.strip() for line in paragraph.splitlines()))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    """A value as it would be written in YAML (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _default(key: Key) -> str:
    return "required" if key.required else f"`{_value(key.default)}`"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _key_table(keys: Mapping[str, Key]) -> list[str]:
    return _table(("key", "default", "what"), ((f"`{name}`", _default(key), key.doc) for name, key in keys.items()))


def _top() -> list[str]:
    rows = [(f"`{name}`", TOP_DOCS.get(name, "(undocumented)")) for name in TOP_KEYS]
    return ["## Top-level keys", "", *_table(("key", "what"), rows)]


def _model() -> list[str]:
    lines = [
        "## model",
        "",
        "Each entry is `name: {type: ..., ...}`. Keys every type takes:",
        "",
        *_key_table(COMMON_KEYS),
        "Node types, each with its own keys:",
        "",
    ]
    for name in sorted(NODE_TYPES):
        node = NODE_TYPES[name]
        lines += [f"### `{name}`", "", _first_paragraph(node.doc), ""]
        if node.needs_given:
            lines += ["Needs parents in `given`.", ""]
        lines += _key_table(node.keys) if node.keys else ["No keys of its own.", ""]
    return lines


def _time() -> list[str]:
    return ["## time", "", *_table(("key", "what"), ((f"`{k}`", v) for k, v in TIME_KEYS.items()))]


def _section(name: str, keys: Mapping[str, Key], intro: str) -> list[str]:
    return [f"## {name}", "", intro, "", *_key_table(keys)]


def _networks() -> list[str]:
    lines = [
        "## networks",
        "",
        "`networks:` maps names to layer lists; `net:` takes such a name, a preset name or an inline "
        "layer list. A layer is a one-key mapping, the kind and its value, plus options: "
        "`{deconv: 128, kernel: 5, stride: 2, act: relu, norm: batch}`.",
        "",
        "### Layer kinds",
        "",
    ]
    rows = []
    for name in sorted(LAYER_KINDS):
        kind = LAYER_KINDS[name]
        options = ", ".join(f"`{key}` ({_value(option.default)})" for key, option in kind.keys.items())
        rows.append((f"`{name}`", _markdown(kind.doc), options or "none"))
    lines += _table(("kind", "what", "options (default)"), rows)
    lines += [
        f"Values of `act`: {', '.join(f'`{a}`' for a in ACTIVATIONS)} (`alpha` is the leaky ReLU slope); "
        f"`norm`: {', '.join(f'`{n}`' for n in NORMS)}; `padding`: {', '.join(f'`{p}`' for p in PADDINGS)}.",
        "",
        "### Presets",
        "",
        "A preset builds the layer list that produces the variable's shape (a generator's output "
        "activation follows `data.range` for pixel data; linear otherwise).",
        "",
    ]
    rows = []
    for name in sorted(PRESETS):
        residual = "yes: v = input + f(...)" if name in PRESET_RESIDUAL else ""
        rows.append((f"`{name}`", _first_paragraph(PRESETS[name].__doc__), residual))
    lines += _table(("preset", "layers", "residual"), rows)
    return lines


def _data_key_row(name: str, key: data_registry.Key) -> tuple[str, ...]:
    kind = key.kind if key.choices is None else f"one of {', '.join(_value(c) for c in key.choices)}"
    if key.minimum is not None:
        kind += f", >= {key.minimum:g}"
    default = "required" if key.required else ("not set" if key.default is None else f"`{_value(key.default)}`")
    return (f"`{name}`", kind, default, key.doc)


def _data() -> list[str]:
    common = data_registry.COMMON_KEYS
    lines = [
        "## data",
        "",
        "`source:` picks a data source; the other keys are checked against the keys it registered "
        "(`ggdsl validate` opens no file). Keys every source takes:",
        "",
        *_table(("key", "kind", "default", "what"), (_data_key_row(n, k) for n, k in common.items())),
        "Sources, each with its own keys:",
        "",
    ]
    for name in data_registry.source_names():
        info = data_registry.get_source(name)
        own = {n: k for n, k in info.keys.items() if common.get(n) is not k}
        lines += [f"### `{name}`", "", _first_paragraph(info.loader.__doc__) or info.doc, ""]
        if own:
            lines += _table(("key", "kind", "default", "what"), (_data_key_row(n, k) for n, k in own.items()))
        else:
            lines += ["No keys of its own.", ""]
    return lines


def _eval() -> list[str]:
    rows = [(f"`{name}`", EVAL_DOCS.get(name, "(undocumented)")) for name in EVAL_NAMES]
    return [
        "## eval",
        "",
        "A list of names; results go to `eval.json` (one key per number), figures to `figures/`.",
        "",
        *_table(("name", "what"), rows),
    ]


def reference_markdown() -> str:
    """The whole reference as Markdown text."""
    lines = [
        "# Spec reference",
        "",
        "<!-- Generated by `python -m ggdsl.reference -o docs/reference.md`; do not edit by hand. -->",
        "",
        "Every key a spec may hold, generated from the registries the spec loader checks against, "
        "so it lists exactly what `ggdsl validate` accepts (tests/test_docs.py keeps the two equal). "
        "The format with its examples: the spec contract (SPEC.md); a first model: "
        "[the tutorial](tutorial.md); new node types, layers and sources: [extending ggdsl](extending.md). "
        f"Required top-level keys: {', '.join(f'`{k}`' for k in REQUIRED_TOP_KEYS)}.",
        "",
        *_top(),
        *_model(),
        *_time(),
        *_section(
            "inference",
            INFERENCE_KEYS,
            "The recognition model q(Z | X); latents without an entry in `nets` get an extractor "
            "assembled from the shapes of their q-parents, or their exact posterior where it has a closed form.",
        ),
        *_section(
            "objective",
            OBJECTIVE_KEYS,
            "Factor names (`x|h`, `v|v[t-1]`) are those `ggdsl explain` prints.",
        ),
        *_networks(),
        *_data(),
        *_section(
            "train",
            TRAIN_KEYS,
            "Any value can be overridden on the command line: `--set train.steps=500`.",
        ),
        "### `train.pretrain`",
        "",
        "Keys of the autoencoder phase, e.g. `pretrain: {steps: 1500}` (all but `steps` have defaults).",
        "",
        *_key_table(PRETRAIN_KEYS),
        *_eval(),
    ]
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ggdsl.reference [-o FILE]``: print or write the reference."""
    parser = argparse.ArgumentParser(prog="python -m ggdsl.reference", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
