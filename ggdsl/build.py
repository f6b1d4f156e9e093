"""Build the Flax NNX networks of a compiled model from its :class:`~ggdsl.plan.ModelPlan`.

Two modules come out: :class:`Generative` (generators, extractors, learned standard
deviations: everything the generator-side optimiser updates) and :class:`Critics` (the
discriminators). The training step splits each once and works on their states.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from ggdsl.nets.modules import PlanNetwork
from ggdsl.plan import ModelPlan, NetSpec


def module_key(key: str) -> str:
    """A module attribute name for a template or group name (``x|h,v`` -> ``x_h_v``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def _network(net: NetSpec, rngs: nnx.Rngs, conv_impl: str) -> PlanNetwork:
    return PlanNetwork(net.plan, net.inputs, rngs=rngs, conv_impl=conv_impl)


class Generative(nnx.Module):
    """Generators of p, extractors of q, and learned standard deviations."""

    def __init__(self, plan: ModelPlan, *, rngs: nnx.Rngs, conv_impl: str = "auto"):
        self.generators = nnx.Dict({module_key(k): _network(n, rngs, conv_impl) for k, n in plan.generators.items()})
        self.extractors = nnx.Dict({module_key(k): _network(n, rngs, conv_impl) for k, n in plan.extractors.items()})
        log_std = {}
        for name, var in plan.spec.model.items():
            for definition, key in ((var, name), (var.first, f"{name}[1]")):
                if definition is not None and definition.type == "normal" and definition.get("std") == "learned":
                    log_std[module_key(key)] = nnx.Param(jnp.zeros(var.shape, jnp.float32))
        self.log_std = nnx.Dict(log_std)


class Critics(nnx.Module):
    """One discriminator per factor group (or one global discriminator)."""

    def __init__(self, plan: ModelPlan, *, rngs: nnx.Rngs, conv_impl: str = "auto"):
        self.discriminators = nnx.Dict(
            {module_key(k): _network(n, rngs, conv_impl) for k, n in plan.discriminators.items()}
        )


def build_modules(plan: ModelPlan, seed: int, *, conv_impl: str = "auto") -> tuple[Generative, Critics]:
    """Initialise both modules from ``seed`` (parameters and dropout streams)."""
    generative = Generative(plan, rngs=nnx.Rngs(params=seed, dropout=seed + 1), conv_impl=conv_impl)
    critics = Critics(plan, rngs=nnx.Rngs(params=seed + 2, dropout=seed + 3), conv_impl=conv_impl)
    return generative, critics
