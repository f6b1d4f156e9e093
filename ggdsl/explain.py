"""What a spec compiles to, in words and formulas: ``ggdsl explain`` and ``validate``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ggdsl.errors import GGDSLError
from ggdsl.factorize import Analysis, analyze
from ggdsl.plan import ModelPlan, plan_model
from ggdsl.spec.frozen import thaw
from ggdsl.spec.ir import Spec, Variable


def summary(spec: Spec) -> dict[str, Any]:
    """Counts for ``validate``'s one-line summary."""
    analysis = analyze(spec)
    groups = analysis.groups()
    factors = (
        "1 global discriminator"
        if spec.objective.divergence == "global"
        else (f"{len(analysis.factors)} local factors in {len(groups)} groups")
    )
    line = (
        f"{spec.name}: {len(spec.model)} variables ({len(spec.observed)} observed), "
        f"{len(analysis.nodes)} nodes unrolled, q {analysis.family} ({len(analysis.exact)} exact), {factors}"
    )
    return {
        "name": spec.name,
        "variables": len(spec.model),
        "observed": list(spec.observed),
        "nodes": len(analysis.nodes),
        "family": analysis.family,
        "exact": list(analysis.exact),
        "factors": [f.name for f in analysis.factors],
        "groups": list(groups),
        "line": line,
    }


def _prior(var: Variable, parents: str) -> str:
    if var.type == "categorical":
        if var.given:
            return f"Categorical(softmax(net({parents})))"
        return f"Categorical({var.get('classes')} classes, {'uniform' if var.get('probs') is None else 'fixed probs'})"
    if var.type == "normal":
        std = var.get("std")
        if var.given:
            return f"Normal(net({parents}), {'learned' if std == 'learned' else std})"
        return f"Normal({var.get('mean')}, {std})"
    if var.type == "uniform":
        return f"Uniform({var.get('low')}, {var.get('high')})"
    if var.type == "implicit":
        eps = f", eps[{var.get('noise')}]" if var.get("noise") else ""
        return f"net({parents}{eps})"
    return f"{var.type}({parents})"


def _recovery(spec: Spec, latent: str) -> str:
    """The latent reconstruction term of one spec latent, in words."""
    if spec.model[latent].type == "categorical":
        return f"-log q({latent} | ...)"
    return f"|{latent} - E(x)|^2"


def _agreement(spec: Spec, latent: str) -> str:
    """The consistency term of one spec latent, in words."""
    if spec.model[latent].type == "categorical":
        return f"-q({latent} | x) . log q({latent} | T(x))"
    return f"|{latent}(T(x)) - {latent}(x)|^2"


def _net_label(plan: ModelPlan, role: str, key: str | None) -> str:
    if key is None:
        return ""
    net = getattr(plan, role)[key]
    return f"{net.source}, {net.params:,} params"


def explain_dict(spec: Spec) -> dict[str, Any]:
    """The explanation as data (``explain --json``)."""
    analysis = analyze(spec)
    try:
        plan: ModelPlan | None = plan_model(spec, analysis)
        plan_error = None
    except GGDSLError as error:
        plan, plan_error = None, str(error)
    out: dict[str, Any] = {
        "name": spec.name,
        "p": {n: list(ps) for n, ps in analysis.p_parents.items()},
        "q": {n: list(ps) for n, ps in analysis.q_parents.items()},
        "q_family": analysis.family,
        "order": list(analysis.order),
        "exact": list(analysis.exact),
        "factors": [{"name": f.name, "variables": list(f.variables), "group": f.group} for f in analysis.factors],
        "objective": {
            "divergence": spec.objective.divergence,
            "loss": spec.objective.loss,
            "reconstruction": spec.objective.reconstruction,
            "latent_reconstruction": thaw(spec.objective.latent_reconstruction),
            "code_likelihood": spec.objective.code_likelihood,
            "augment": thaw(spec.objective.augment),
            "consistency": thaw(spec.objective.consistency),
            "r1": thaw(spec.objective.r1),
            "spectral_norm": spec.objective.spectral_norm,
            "instance_noise": spec.objective.instance_noise,
            "video": spec.objective.video,
            "weights": _weights(spec, analysis),
        },
    }
    if plan is not None:
        out["networks"] = [
            {
                "role": n.role,
                "key": n.key,
                "source": n.source,
                "params": n.params,
                "inputs": {k: list(v) for k, v in n.inputs.items()},
                "output": list(n.out_shape),
                "copies": len(n.members),
            }
            for n in plan.all()
        ]
        out["params"] = {
            role: sum(n.params for n in plan.all() if n.role == role)
            for role in ("generator", "extractor", "discriminator")
        }
    else:
        out["plan_error"] = plan_error
    return out


def _weights(spec: Spec, analysis: Analysis) -> dict[str, float]:
    if spec.objective.divergence == "global":
        return {"global": 1.0}
    groups = list(analysis.groups())
    if spec.objective.weights == "uniform":
        return {g: 1.0 / len(groups) for g in groups}
    given = dict(spec.objective.weights)
    return {g: float(given.get(g, 0.0)) for g in groups}


def explain(spec: Spec) -> str:
    """A readable account of p, q, the factors, the networks and the objective."""
    info = explain_dict(spec)
    analysis = analyze(spec)
    plan = plan_model(spec, analysis) if "networks" in info else None
    lines = [f"{spec.name}", ""]
    lines.append("p(X, Z), the generative model (ancestral order):")
    for node in analysis.nodes:
        var = spec.model[analysis.templates[node]]
        var = var.first if node in analysis.first else var
        parents = ", ".join(analysis.p_parents[node])
        kind = "observed" if spec.model[analysis.templates[node]].observed else "latent"
        shape = list(spec.model[analysis.templates[node]].event_shape)
        label = _net_label(plan, "generators", plan.generator_of.get(node)) if plan else ""
        sep = "=" if var.type == "implicit" else "~"
        lines.append(f"  {node} {sep} {_prior(var, parents)}   {shape} {kind}" + (f"   [{label}]" if label else ""))
    lines.append("")
    lines.append(
        f"q(Z | X), the recognition model ({analysis.family}; latents leaves to roots: {', '.join(analysis.order)}):"
    )
    for latent in analysis.order:
        parents = ", ".join(analysis.q_parents[latent])
        if latent in analysis.exact:
            child = analysis.q_parents[latent][0]
            lines.append(
                f"  {latent} ~ q({latent} | {parents})   exact: softmax(log pi - |{child} - mu|^2 / (2 std^2))"
            )
        else:
            label = _net_label(plan, "extractors", plan.extractor_of.get(latent)) if plan else ""
            lines.append(f"  {latent} = E({parents})" + (f"   [{label}]" if label else ""))
    lines.append("")
    weights = info["objective"]["weights"]
    if spec.objective.divergence == "global":
        lines.append("One global discriminator on all of (X, Z):")
        names = ", ".join(analysis.nodes)
        label = _net_label(plan, "discriminators", "global") if plan else ""
        lines.append(f"  D({names})" + (f"   [{label}]" if label else ""))
    else:
        header = "Local factors A = {v} ∪ pa(v) (subsets of others dropped)"
        if spec.objective.marginals:
            header += ", the marginals " + ", ".join(f"{{{v}}}" for v in spec.objective.marginals) + ","
        lines.append(header + " and their discriminators:")
        for group, factors in analysis.groups().items():
            copies = f"{len(factors)} copies, shared" if len(factors) > 1 else "1 copy"
            if plan is not None and group not in plan.discriminators:
                label = "weight 0: no discriminator"
            else:
                label = _net_label(plan, "discriminators", group) if plan else ""
            variables = "; ".join("(" + ", ".join(f.variables) + ")" for f in factors)
            lines.append(
                f"  D[{group}]  w={weights[group]:.3g}  {copies}: {variables}" + (f"   [{label}]" if label else "")
            )
    lines.append("")
    if spec.objective.loss == "hinge":
        lines.append("Objective (hinge):")
        lines.append("  discriminators: min_D  sum_A w_A ( E_q[relu(1 - D_A(A))] + E_p[relu(1 + D_A(A))] )")
        lines.append("  generators and extractors: min  sum_A w_A ( E_q[D_A(A)] - E_p[D_A(A)] )")
    else:
        lines.append("Objective (bce, the JS estimate):")
        lines.append("  discriminators: max_D  sum_A w_A ( E_q[log D_A(A)] + E_p[log(1 - D_A(A))] )")
        lines.append(
            "  generators and extractors (non-saturating): min  sum_A w_A ( -E_p[log D_A(A)] - E_q[log(1 - D_A(A))] )"
        )
    if spec.objective.reconstruction:
        lines.append(f"    + {spec.objective.reconstruction:g} * E_q |x - G(E(x))|^2")
    latent = spec.objective.latent_reconstruction
    if isinstance(latent, Mapping) and any(latent.values()):
        terms = " + ".join(f"{w:g} * {_recovery(spec, z)}" for z, w in latent.items() if w)
        lines.append(f"    + E_p [ {terms} ]  (latent reconstruction)")
    elif latent and not isinstance(latent, Mapping):
        lines.append(f"    + {latent:g} * E_p [ |z - E(x)|^2 for continuous z, -log q(z | ...) for categorical z ]")
    if spec.objective.augment:
        amounts = spec.objective.augment
        where = {
            "latent_reconstruction": "q reads p's images in the latent reconstruction",
            "discriminators": "the discriminators read both sides' images",
            "consistency": "q reads real images and their transformed copies alike",
        }
        lines.append(
            f"    images under random affine maps (shift +-{amounts['shift']:g} px, rotation "
            f"+-{amounts['rotate']:g} deg, zoom 1 +- {amounts['scale']:g}): "
            + "; ".join(where[t] for t in amounts["apply_to"])
        )
    agree = spec.objective.consistency
    if isinstance(agree, Mapping) and any(agree.values()):
        terms = " + ".join(f"{w:g} * {_agreement(spec, z)}" for z, w in agree.items() if w)
        lines.append(f"    + E_data [ {terms} ]  (consistency; q's reading of x held fixed)")
    elif agree and not isinstance(agree, Mapping):
        lines.append(
            f"    + {agree:g} * E_data [ |z(T(x)) - z(x)|^2 for continuous z, -q(z | x) . log q(z | T(x)) for "
            "categorical z ]  (consistency; q's reading of x held fixed)"
        )
    if spec.objective.code_likelihood:
        for latent in analysis.mixtures:
            h = analysis.q_parents[latent][0]
            reader = "q" if latent in analysis.exact else "p"  # a learned q(k | h): p's own posterior assigns
            lines.append(
                f"    + {spec.objective.code_likelihood:g} * E_q [ -log p({h} | {latent}) - log p({latent}) ] at "
                f"{h} = E(x), {latent} by {reader}({latent} | {h}) balanced over the batch (Sinkhorn), "
                "the means held fixed (code likelihood)"
            )
    r1 = spec.objective.r1
    if isinstance(r1, Mapping) and any(r1.values()):
        paid = ", ".join(f"{gamma:g} on {name}" for name, gamma in r1.items() if gamma)
        groups = ["global"] if spec.objective.divergence == "global" else list(analysis.groups())
        free = [name for name in groups if not r1.get(name) and (plan is None or name in plan.discriminators)]
        tail = f"; none on {', '.join(free)}" if free else ""
        lines.append(f"  discriminators also pay R1: + gamma/2 * E_q |grad_A D_A(A)|^2, gamma {paid}{tail}")
    elif not isinstance(r1, Mapping) and r1:
        lines.append(f"  discriminators also pay R1: + {r1:g}/2 * E_q |grad_A D_A(A)|^2 per factor")
    if spec.objective.spectral_norm:
        lines.append("  discriminators: spectral normalisation of every dense and convolution weight")
    if spec.objective.instance_noise:
        lines.append(
            f"  discriminators see observed inputs + N(0, s^2) noise, s from {spec.objective.instance_noise:g}"
            " down to 0 over train.steps"
        )
    if spec.train.pretrain:
        pre = spec.train.pretrain
        from ggdsl.pretrain import resolve_init

        init = resolve_init(pre, analysis)
        then = (
            f", then the component means of p({', '.join(analysis.q_parents[k][0] for k in analysis.mixtures)} | "
            f"{', '.join(analysis.mixtures)}) at the k-means centres of {pre['examples']} codes E(x)"
            + (
                ""
                if pre["rescale"] is False
                else ", the codes scaled to p's std about them"
                + (" where the networks allow" if pre["rescale"] == "auto" else "")
            )
            if init == "kmeans"
            else ""
        )
        loss = "|x - G(E(x))|^2"
        if pre.get("augment"):
            maps = pre["augment"]
            target = "T(x)" if maps["target"] == "transformed" else "x"
            loss = (
                f"|{target} - G(E(T(x)))|^2, T a random shift of +-{maps['shift']:g} px, turn of "
                f"+-{maps['rotate']:g} deg and zoom of +-{maps['scale']:g},"
            )
        if pre.get("contrastive"):
            pair = pre["contrastive"]
            loss += (
                f" plus {pair['weight']:g} * NT-Xent of the codes E(T(x)), E(T'(x)) of two such maps (temperature "
                f"{pair['temperature']:g}),"
            )
        from ggdsl.pretrain import standardized

        moved = standardized(spec, analysis)
        if moved:
            then += (
                f", then the codes of {', '.join(moved)} shifted and scaled to mean 0, std 1 over "
                f"{pre['examples']} examples"
            )
        lines.append(f"  first {pre['steps']} steps of {loss} alone (train.pretrain){then}")
    if spec.train.ema:
        lines.append(f"  sampling and evaluation use an EMA of the G/E weights (decay {spec.train.ema:g})")
    discrete = [z for z in analysis.latent if spec.model[analysis.templates[z]].type == "categorical"]
    if discrete:
        lines.append(
            f"  discrete latents ({', '.join(discrete)}): {spec.inference.discrete}"
            + (f", temperature {spec.inference.temperature:g}" if spec.inference.discrete == "gumbel_softmax" else "")
        )
    lines.append("")
    if "params" in info:
        p = info["params"]
        total = sum(p.values())
        lines.append(
            f"Parameters: generators {p['generator']:,}, extractors {p['extractor']:,}, "
            f"discriminators {p['discriminator']:,}; total {total:,}"
        )
    else:
        lines.append(f"Networks: cannot be assembled: {info['plan_error']}")
    return "\n".join(lines)
