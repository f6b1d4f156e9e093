"""What the SSGAN references read from a spec: its three templates and the networks' input names.

Pure Python (no JAX, no torch), so the PyTorch twin can use it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggdsl.plan import ModelPlan


@dataclass(frozen=True)
class SSGANNodes:
    """The templates of an SSGAN (``h`` content, ``v[t]`` motion chain, ``x[t]`` frames) and
    the names under which each network reads them."""

    content: str  # h: normal root, once per video
    motion: str  # v[t]: v[1] ~ first (normal), v[t] = v[t-1] + MLP([v[t-1], eps])
    frame: str  # x[t] = G(h, v[t]), observed
    steps: int  # T
    transition: dict[str, str]  # input name -> "previous" / "noise"
    generator: dict[str, str]  # input name -> "content" / "motion"
    motion_extractor: str  # extractor key of q(v[t] | x[t])
    content_extractor: str  # extractor key of q(h | x[1:T])
    frame_critic: str  # discriminator group of (x[t], h, v[t])
    motion_critic: str  # discriminator group of (v[t], v[t-1])
    frame_critic_inputs: dict[str, str]  # input name -> "frame" / "content" / "motion"
    motion_critic_inputs: dict[str, str]  # input name -> "current" / "previous"


def ssgan_nodes(plan: ModelPlan) -> SSGANNodes:
    """The SSGAN structure of ``plan``.

    Raises:
        ValueError: The spec is not an SSGAN the references implement (content h, a residual
            transition chain v with a normal first step, frames x given h and v[t], mean-field
            q with a content and a frame extractor, the two local discriminators, one critic
            step, bce with or without the reconstruction term, no latent reconstruction or R1,
            one Adam).
    """
    spec, analysis = plan.spec, plan.analysis
    model = spec.model
    problem = _problem(plan)
    if problem:
        raise ValueError(f"{spec.name}: not an SSGAN spec the references implement ({problem})")
    (content,) = [n for n, v in model.items() if not v.steps]
    (frame,) = [n for n, v in model.items() if v.steps and v.observed]
    (motion,) = [n for n, v in model.items() if v.steps and not v.observed]

    def template(node: str) -> str:
        return analysis.templates[node]

    def names(net, roles) -> dict[str, str]:
        return {slot: roles(nodes) for slot, nodes in net.bindings[0].items()}

    trans = plan.generators[plan.generator_of[f"{motion}[2]"]]
    transition = {trans.residual: "previous", **{n: "noise" for n in trans.inputs if n != trans.residual}}
    gen = plan.generators[plan.generator_of[f"{frame}[1]"]]
    generator = names(gen, lambda nodes: "content" if template(nodes[0]) == content else "motion")
    critic_of = {template(f.variables[0]): f.group for f in analysis.factors}
    frame_critic, motion_critic = critic_of[frame], critic_of[motion]
    frame_roles = {frame: "frame", content: "content", motion: "motion"}
    frame_inputs = names(plan.discriminators[frame_critic], lambda nodes: frame_roles[template(nodes[0])])
    motion_net = plan.discriminators[motion_critic]
    first_pair = {analysis.steps[nodes[0]] for nodes in motion_net.bindings[0].values()}
    motion_inputs = names(
        motion_net, lambda nodes: "current" if analysis.steps[nodes[0]] == max(first_pair) else "previous"
    )
    return SSGANNodes(
        content=content,
        motion=motion,
        frame=frame,
        steps=int(spec.time.steps),
        transition=transition,
        generator=generator,
        motion_extractor=plan.extractor_of[f"{motion}[1]"],
        content_extractor=plan.extractor_of[content],
        frame_critic=frame_critic,
        motion_critic=motion_critic,
        frame_critic_inputs=frame_inputs,
        motion_critic_inputs=motion_inputs,
    )


def _problem(plan: ModelPlan) -> str | None:
    """What keeps ``plan`` from being a supported SSGAN, in words; ``None`` when it is one."""
    spec, analysis = plan.spec, plan.analysis
    model = spec.model
    if spec.time is None or len(model) != 3:
        return "three variables over time steps"
    content = [n for n, v in model.items() if not v.steps and v.type == "normal" and not v.given]
    frames = [n for n, v in model.items() if v.steps and v.observed]
    motion = [n for n, v in model.items() if v.steps and not v.observed and v.type == "implicit"]
    if not (len(content) == len(frames) == len(motion) == 1):
        return "a normal content root, an implicit motion chain, observed frames"
    var = model[motion[0]]
    if var.first is None or var.first.type != "normal" or [(r.name, r.lag) for r in var.given] != [(motion[0], 1)]:
        return "v[t] given v[t-1] with a normal first step"
    if "learned" in (model[content[0]].get("std"), var.first.get("std")):
        return "fixed standard deviations"
    trans = plan.generators.get(plan.generator_of.get(f"{motion[0]}[2]") or "")
    if trans is None or trans.residual is None or set(trans.inputs) != {trans.residual, "eps"}:
        return "a residual transition v[t-1] + MLP([v[t-1], eps])"
    if spec.inference.family != "mean_field" or analysis.exact or len(plan.extractors) != 2:
        return "mean-field q with a content and a frame extractor"
    if spec.objective.divergence != "local" or len(plan.discriminators) != 2:
        return "the two local discriminators"
    objective = spec.objective
    if objective.latent_reconstruction or objective.r1 or objective.loss != "bce":
        return "bce, with or without reconstruction: no latent reconstruction or R1 terms"
    if objective.spectral_norm or objective.instance_noise:
        return "no spectral norm, no instance noise"
    if spec.train.critic_steps != 1 or spec.train.optimizer.get("name") != "adam" or spec.train.critic_optimizer:
        return "one critic step, one Adam for both sides"
    frame_generator = plan.generator_of.get(f"{frames[0]}[1]")
    for net in [trans, *plan.discriminators.values()]:
        layers = [*(layer for branch in net.plan.branches for layer in branch.layers), *net.plan.head]
        if any(layer.options.get("norm", "none") != "none" for layer in layers):
            return f"no normalisation in the transition or the discriminators (found in {net.role} {net.key})"
    if frame_generator is None:
        return "frames drawn by a generator"
    (content_net,) = [n for n in plan.extractors.values() if n.members == (content[0],)]
    in_order = tuple(f"{frames[0]}[{t}]" for t in range(1, spec.time.steps + 1))
    if list(content_net.bindings[0].values()) != [in_order]:
        return "q(h | x[1], ..., x[T]) reading the frames in time order"
    return None
