"""How variables of a node type are drawn: the sampler registry, the JAX half of a node type.

A node type has two halves. The spec half (:func:`ggdsl.register_node`, in
:mod:`ggdsl.spec.schema`) says which keys a variable of the type takes and checks them; it
is all that ``validate``, ``explain`` and ``graph`` need. The sampling half, registered
here, says how the training step draws the variable:

- under p, ``sample_p(var, net_out, key, shape, settings)``: ``net_out`` is the output of
  the variable's network (shape ``(batch, *var.shape)``) when it has parents, ``None`` for
  a root; ``shape`` is ``(batch, *var.shape)``; ``settings`` holds the spec's
  ``inference.discrete`` and ``inference.temperature`` (a
  :class:`ggdsl.objective.Settings`). It returns the sample, shape ``shape``.
- under q, ``sample_q(var, out, key, settings)``: ``out`` is the extractor's output, of
  the variable's shape; it returns the recognition sample. By default the output is the
  sample, as for a ``normal`` latent.

Networks are sized from the variable's ``shape``: a generator or an extractor for a
variable of shape ``[8]`` ends in 8 units, so a Bernoulli's networks give 8 logits.
Samples must stay differentiable where gradients should flow (a relaxed sample for a
discrete type). The built-in types (:data:`BUILTIN_TYPES`) are sampled in
:mod:`ggdsl.objective` itself. A Bernoulli latent, with a fixed prior at a root and
binary-concrete relaxations elsewhere (``examples/bernoulli_node.py`` has the whole
model)::

    import jax, jax.numpy as jnp

    def bernoulli_p(var, net_out, key, shape, settings):
        if net_out is None:
            return jax.random.bernoulli(key, var.get("probs"), shape).astype(jnp.float32)
        return binary_concrete(net_out, key, settings.temperature)

    def bernoulli_q(var, out, key, settings):
        return binary_concrete(out, key, settings.temperature)

    register_sampler("bernoulli", sample_p=bernoulli_p, sample_q=bernoulli_q)

This module imports no JAX; the samplers it holds do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ggdsl.errors import BuildError
from ggdsl.spec.ir import Variable

#: Node types sampled by :mod:`ggdsl.objective` itself; they take no registered sampler.
BUILTIN_TYPES: tuple[str, ...] = ("categorical", "normal", "uniform", "implicit")

# (var, net_out or None, key, shape, settings) -> sample
SampleP = Callable[[Variable, Any, Any, tuple[int, ...], Any], Any]
# (var, extractor output, key, settings) -> sample
SampleQ = Callable[[Variable, Any, Any, Any], Any]


def _output_is_sample(var: Variable, out: Any, key: Any, settings: Any) -> Any:
    return out


@dataclass(frozen=True)
class NodeSampler:
    """How a registered node type is drawn under p and under q (see the module docstring)."""

    name: str
    sample_p: SampleP
    sample_q: SampleQ = field(default=_output_is_sample)


NODE_SAMPLERS: dict[str, NodeSampler] = {}


def register_sampler(name: str, *, sample_p: SampleP, sample_q: SampleQ | None = None) -> NodeSampler:
    """Register how variables of node type ``name`` are sampled; returns the record.

    Args:
        name: The node type, as registered with :func:`ggdsl.register_node`.
        sample_p: ``(var, net_out, key, shape, settings) -> sample`` under p; ``net_out``
            is ``None`` for a root.
        sample_q: ``(var, out, key, settings) -> sample`` from an extractor's output;
            default: the output itself.

    Raises:
        ValueError: ``name`` is a built-in type (sampled by :mod:`ggdsl.objective`).

    Registering a name again replaces its sampler.

    >>> sampler = register_sampler("constant", sample_p=lambda var, net_out, key, shape, settings: 0.0)
    >>> node_sampler("constant").sample_q(None, 1.5, None, None)
    1.5
    >>> _ = NODE_SAMPLERS.pop("constant")
    """
    if name in BUILTIN_TYPES:
        raise ValueError(f"node type {name!r} is built in; register a sampler under a new type name")
    sampler = NodeSampler(name, sample_p, sample_q or _output_is_sample)
    NODE_SAMPLERS[name] = sampler
    return sampler


def node_sampler(name: str) -> NodeSampler:
    """The sampler registered for node type ``name``.

    Raises:
        BuildError: None is registered; the message says how to register one.
    """
    try:
        return NODE_SAMPLERS[name]
    except KeyError:
        known = ", ".join(sorted(NODE_SAMPLERS)) or "none"
        raise BuildError(
            f"node type {name!r} has no sampler: register one with "
            f"ggdsl.register_sampler({name!r}, sample_p=..., sample_q=...) (registered: {known})"
        ) from None
