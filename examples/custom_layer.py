"""A new layer kind: a residual MLP block, ``{residual: 64}``, used in a generator.

``{residual: n}`` maps a vector x of width d to ``x + W2 gelu(W1 x + b1) + b2`` with n hidden
units (W1 is d x n, W2 is n x d), so its output has the input's shape. Like every layer it
takes the common ``act`` and ``norm`` keys, applied after the sum.

A layer kind has two halves, both registered here:

1. the shape half (:func:`ggdsl.nets.shapes.register_layer_kind`, no JAX): how its value
   and keys are checked, its output shape and its parameter count. The spec loader,
   ``ggdsl validate`` and ``ggdsl explain`` read only this.
2. the module half (:func:`ggdsl.nets.modules.register_layer_builder`): the Flax NNX module
   that computes it. Its parameters must number what ``param_count`` says
   (``explain``'s counts are the trained model's).

Run it: ``python examples/custom_layer.py`` (about 15 s on a CPU).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import jax
from flax import nnx

import ggdsl
from ggdsl.nets.modules import register_layer_builder
from ggdsl.nets.shapes import ACTIVATIONS, NORMS, Option, register_layer_kind


def positive_int(value: Any) -> str | None:
    """The check of ``residual``'s value: None when valid, else the message a spec error shows."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"expected a positive int (hidden units), got {value!r}"
    return None


def one_of(choices: tuple[str, ...]):
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {value!r}"

    return check


def residual_shape(layer: ggdsl.Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape: the input's. A ValueError becomes a BuildError naming the layer."""
    if len(shape) != 1:
        raise ValueError(f"residual expects a vector (n,), got shape {shape}; add a flatten before it")
    return shape


def residual_params(layer: ggdsl.Layer, shape: tuple[int, ...]) -> int:
    """W1, b1, W2, b2, and a norm's scale and bias when ``norm`` is batch or layer."""
    width, hidden = math.prod(shape), int(layer.value)
    norm = 2 * width if layer.get("norm", "none") != "none" else 0
    return width * hidden + hidden + hidden * width + width + norm


register_layer_kind(
    "residual",
    value=positive_int,
    keys={"act": Option(one_of(ACTIVATIONS), "linear"), "norm": Option(one_of(NORMS), "none")},
    out_shape=residual_shape,
    param_count=residual_params,
    doc="residual MLP block x + W2 gelu(W1 x) with n hidden units",
)


class Residual(nnx.Module):
    """``x + outer(gelu(inner(x)))``; ``act`` and ``norm`` are applied by the caller."""

    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.inner = nnx.Linear(width, hidden, rngs=rngs)
        self.outer = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return x + self.outer(jax.nn.gelu(self.inner(x)))


@register_layer_builder("residual")
def build_residual(layer: ggdsl.Layer, in_shape, out_shape, *, rngs: nnx.Rngs, conv_impl: str) -> Residual:
    """Called once per ``{residual: n}`` of a network, with per-sample shapes (no batch axis)."""
    return Residual(in_shape[0], int(layer.value), rngs=rngs)


SPEC = """
name: residual-toy
data: {source: toy, observe: {x: x}, labels: label, components: 4, num_examples: 2000}
model:
  k: {type: categorical, classes: 4}
  h: {type: normal, shape: [8], given: [k], net: linear, std: 0.25}
  x: {type: implicit, shape: [2], given: [h], net: generator, observed: true}
inference:
  nets: {h: extractor}
objective:
  reconstruction: 1.0
  discriminators: {x|h: critic, h|k: critic}
networks:
  generator:
    - {dense: 32, act: leaky_relu}
    - {residual: 64}
    - {residual: 64, act: leaky_relu}
    - {dense: 2}
  extractor:
    - {dense: 64, act: leaky_relu}
    - {dense: 8}
  critic:
    - {dense: 64, act: leaky_relu}
    - {dense: 1}
train:
  batch_size: 64
  steps: 100
  optimizer: {name: adam, learning_rate: 1.0e-3, b1: 0.5, b2: 0.999}
  log_every: 25
  eval_every: 100000
  checkpoint_every: 100000
"""


def main(out: str | Path | None = None, steps: int = 100) -> dict[str, Any]:
    """Explain and train the model whose generator has two residual blocks.

    Returns:
        ``explain`` (``ggdsl explain``'s text), ``generator_params`` (its parameter count
        in the plan), ``run_dir`` and ``metrics`` (the records of ``metrics.jsonl``).
    """
    from ggdsl.explain import explain
    from ggdsl.plan import plan_model
    from ggdsl.runs import RunDir

    spec = ggdsl.load_spec(SPEC, overrides=[f"train.steps={steps}"])
    text = explain(spec)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="ggdsl-layer-"))
    result = ggdsl.compile_and_train(spec, out=out, progress=False)
    summary = {
        "explain": text,
        "generator_params": plan_model(spec).generators["x"].params,
        "run_dir": result.run_dir,
        "metrics": RunDir(result.run_dir).read_metrics(),
    }
    print(text)
    print(f"\nrun folder: {result.run_dir}")
    print(f"last losses: d {summary['metrics'][-1]['d_loss']:.3f}, g {summary['metrics'][-1]['g_loss']:.3f}")
    return summary


if __name__ == "__main__":
    main()
