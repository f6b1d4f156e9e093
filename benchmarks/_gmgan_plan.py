"""What the GMGAN references read from a spec: its three nodes (pure Python, no JAX)."""

from __future__ import annotations

from ggdsl.plan import ModelPlan


def gmgan_nodes(plan: ModelPlan) -> tuple[str, str, str]:
    """``(k, h, x)``: the categorical root, the normal code given k, the observation given h.

    Raises:
        ValueError: The spec is not a GMGAN the references implement (k -> h -> x, exact
            q(k | h), one critic step, Gumbel-softmax, no spectral norm or instance noise).
            The reconstruction, latent-reconstruction and R1 terms are implemented.
    """
    model, spec = plan.spec.model, plan.spec

    def parents(var):
        return [ref.name for ref in var.given]

    cats = [n for n, v in model.items() if v.type == "categorical" and not v.given]
    normals = [n for n, v in model.items() if v.type == "normal" and parents(v) == cats[:1]]
    images = [n for n, v in model.items() if v.observed and parents(v) == normals[:1]]
    ok = (
        len(model) == 3
        and len(cats) == len(normals) == len(images) == 1
        and plan.analysis.exact == tuple(cats)
        and spec.train.critic_steps == 1
        and spec.objective.loss == "bce"
        and not spec.objective.spectral_norm
        and not spec.objective.instance_noise
        and spec.inference.discrete == "gumbel_softmax"
    )
    if not ok:
        raise ValueError(
            f"{spec.name}: not a GMGAN spec the references implement (k -> h -> x, exact q(k | h), "
            "one critic step, bce, gumbel_softmax, no spectral norm or instance noise)"
        )
    return cats[0], normals[0], images[0]
