"""A new node type: a Bernoulli latent, declared for the spec and given its samplers.

The model explains the toy source (four Gaussian clusters on a circle) with a two-bit code::

    c ~ Bernoulli(0.5)^2                 a root: two fair bits, 4 codes for 4 clusters
    h | c ~ N(W c + b, 0.25^2 I)         a linear map of the bits, plus noise
    x = G(h)                             observed

Inverse factorization gives q(h | x) by an extractor and q(c | h) by another, whose two
logits are turned into a relaxed (binary concrete) sample. The local discriminators are
D(x, h) and D(h, c).

A node type has two halves, both registered here:

1. the spec half (:func:`ggdsl.register_node`): its keys, their checks and defaults, and
   cross-key checks. ``ggdsl validate``, ``explain`` and ``graph`` need nothing more.
2. the sampling half (:func:`ggdsl.register_sampler`): how the training step draws it
   under p (from its prior, or from the logits its network gives) and under q (from the
   extractor's logits).

Run it: ``python examples/bernoulli_node.py`` (about 20 s on a CPU).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ggdsl
from ggdsl.spec.schema import Key, check_float, check_net_ref


@ggdsl.register_node(
    "bernoulli",
    keys={
        "probs": Key(check_float(0.0, 1.0), default=0.5, doc="P(unit = 1) of a root, the same for every unit"),
        "net": Key(check_net_ref, default=None, doc="with `given`: the network giving the logits"),
    },
    doc="Binary units in {0, 1}: a root with fixed `probs`, or logits from `net` with `given`. "
    "Relaxed (binary concrete, at inference.temperature) wherever gradients must pass.",
)
def check_bernoulli(var: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Cross-key checks: parents need a logits network, a root takes none."""
    if var.get("given") and var.get("net") is None:
        return [("net", "a bernoulli with parents needs `net` (the logits network)")]
    if not var.get("given") and var.get("net") is not None:
        return [("net", "a root bernoulli takes `probs`, not `net`")]
    return []


def binary_concrete(logits: jax.Array, key: jax.Array, temperature: float, *, hard: bool = False) -> jax.Array:
    """A relaxed Bernoulli sample: sigmoid((logits + logistic noise) / temperature).

    With ``hard``, the forward value is the hard 0/1 sample and the gradient the relaxed
    one's (straight-through).
    """
    uniform = jax.random.uniform(key, logits.shape, logits.dtype, minval=1e-6, maxval=1.0 - 1e-6)
    noisy = logits + jnp.log(uniform) - jnp.log1p(-uniform)
    soft = jax.nn.sigmoid(noisy / temperature)
    if not hard:
        return soft
    return (noisy > 0).astype(soft.dtype) + soft - jax.lax.stop_gradient(soft)


def bernoulli_p(var: ggdsl.Variable, net_out: jax.Array | None, key: jax.Array, shape: tuple[int, ...], settings):
    """Under p: hard bits from the prior at a root; a relaxed sample of the network's logits otherwise.

    ``inference.discrete: straight_through`` (or ``reinforce``, which has no score term for
    this type) makes the relaxed sample hard in the forward pass.
    """
    if net_out is None:
        return jax.random.bernoulli(key, var.get("probs"), shape).astype(jnp.float32)
    return binary_concrete(net_out, key, settings.temperature, hard=settings.discrete != "gumbel_softmax")


def bernoulli_q(var: ggdsl.Variable, out: jax.Array, key: jax.Array, settings) -> jax.Array:
    """Under q: the extractor gives logits; the recognition sample is their relaxed sample."""
    return binary_concrete(out, key, settings.temperature, hard=settings.discrete != "gumbel_softmax")


ggdsl.register_sampler("bernoulli", sample_p=bernoulli_p, sample_q=bernoulli_q)

SPEC = """
name: bits-toy
data: {source: toy, observe: {x: x}, labels: label, components: 4, num_examples: 2000}
model:
  c: {type: bernoulli, shape: [2]}                                  # two fair bits
  h: {type: normal, shape: [8], given: [c], net: linear, std: 0.25}
  x: {type: implicit, shape: [2], given: [h], net: mlp, observed: true}
inference:
  temperature: 0.3
  nets: {h: [{dense: 64, act: leaky_relu}, {dense: 8}], c: [{dense: 64, act: leaky_relu}, {dense: 2}]}
objective:
  reconstruction: 1.0
  latent_reconstruction: 1.0
  discriminators: {x|h: critic, h|c: critic}
networks:
  mlp:
    - {dense: 64, act: leaky_relu}
    - {dense: 2}
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
    """Validate, explain and train the two-bit model; returns what a reader can check.

    Returns:
        ``explain`` (the text ``ggdsl explain`` prints), ``run_dir``, ``metrics`` (the
        records of ``metrics.jsonl``), ``p_bits`` (samples of c under p) and ``q_bits``
        (recognition samples of c for 256 test points).
    """
    from ggdsl.explain import explain
    from ggdsl.train import open_dataset

    spec = ggdsl.load_spec(SPEC, overrides=[f"train.steps={steps}"])
    text = explain(spec)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="ggdsl-bernoulli-"))
    result = ggdsl.compile_and_train(spec, out=out, progress=False)
    run = ggdsl.load_run(result.run_dir)
    x = open_dataset(spec, "test").features["x"][:256]
    summary = {
        "explain": text,
        "run_dir": result.run_dir,
        "metrics": run.dir.read_metrics(),
        "p_bits": run.sample(256, key=0)["c"],
        "q_bits": run.infer(x, key=1)["c"],
    }
    print(text)
    print(f"\nrun folder: {result.run_dir}")
    print(f"last losses: d {summary['metrics'][-1]['d_loss']:.3f}, g {summary['metrics'][-1]['g_loss']:.3f}")
    print(f"codes under p: {np.unique(summary['p_bits'], axis=0).tolist()}")
    print(f"q(c | h) for the first test points: {np.round(summary['q_bits'][:4], 2).tolist()}")
    return summary


if __name__ == "__main__":
    main()
