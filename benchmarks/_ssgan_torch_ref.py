"""A PyTorch (CPU, eager) twin of a bundled SSGAN spec's training step.

Only the benchmark imports this module; ggdsl never imports torch. The networks are
``_gmgan_torch_ref.TorchNet`` (layer sizes from ggdsl's plan, so parameter counts match
``ggdsl explain``), the step is ``TorchGMGAN``'s ``resample`` schedule (samples under
``no_grad`` for the discriminator update, fresh samples for the generator update, the
discriminators frozen during it). The model is ``_ssgan_jax_ref``'s, written the usual eager
way: NCHW frames, the T frames of a batch stacked into the batch dimension (time-major,
``(T * B, C, H, W)``) for the frame generator, the frame extractor and the frame
discriminator, and a Python loop for the T - 1 transitions.
"""

from __future__ import annotations

import torch
from _gmgan_torch_ref import TorchGMGAN, TorchNet, _count
from _ssgan_plan import ssgan_nodes
from torch import nn

from ggdsl.plan import ModelPlan


class TorchSSGAN(TorchGMGAN):
    """The twin; ``step(video)`` (``(B, T, C, H, W)``) is one discriminator and one generator update."""

    def __init__(self, plan: ModelPlan, *, seed: int = 0):
        torch.manual_seed(seed)
        self.nodes = n = ssgan_nodes(plan)
        spec = plan.spec
        self.steps = n.steps
        content, first = spec.model[n.content], spec.model[n.motion].first
        self.content_prior = (float(content.get("mean")), float(content.get("std")), content.shape)
        self.first_prior = (float(first.get("mean")), float(first.get("std")), first.shape)
        trans = plan.generators[plan.generator_of[f"{n.motion}[2]"]]
        self.noise_shape = trans.inputs["eps"]
        self.trans = TorchNet(trans)
        self.gen = TorchNet(plan.generators[plan.generator_of[f"{n.frame}[1]"]])
        self.ext_v = TorchNet(plan.extractors[n.motion_extractor])
        self.ext_h = TorchNet(plan.extractors[n.content_extractor])
        self.groups = [n.frame_critic, n.motion_critic]
        self.discs = nn.ModuleDict({str(i): TorchNet(plan.discriminators[g]) for i, g in enumerate(self.groups)})
        self.weights = [1.0 / len(self.groups)] * len(self.groups)
        if spec.objective.weights != "uniform":
            self.weights = [float(spec.objective.weights.get(g, 0.0)) for g in self.groups]
        config = dict(spec.train.optimizer)
        adam = {
            "lr": config["learning_rate"],
            "betas": (config.get("b1", 0.9), config.get("b2", 0.999)),
            "eps": config.get("eps", 1e-8),
        }
        g_params = [
            *self.trans.parameters(),
            *self.gen.parameters(),
            *self.ext_v.parameters(),
            *self.ext_h.parameters(),
        ]
        self.d_params = list(self.discs.parameters())
        self.g_opt = torch.optim.Adam(g_params, **adam)
        self.d_opt = torch.optim.Adam(self.d_params, **adam)
        self.schedule = "resample"
        self.reconstruction = float(spec.objective.reconstruction)
        self.latent_reconstruction = self.r1 = 0.0
        for module in (self.trans, self.gen, self.ext_v, self.ext_h, self.discs):
            module.train()

    def param_counts(self) -> dict[str, int]:
        n = self.nodes
        counts = {
            f"generator {n.motion}": _count(self.trans),
            f"generator {n.frame}": _count(self.gen),
            f"extractor {n.motion_extractor}": _count(self.ext_v),
            f"extractor {n.content_extractor}": _count(self.ext_h),
        }
        counts.update({f"discriminator {g}": _count(self.discs[str(i)]) for i, g in enumerate(self.groups)})
        return counts

    def sample(self, video):
        """q and p values: frames ``(T * B, C, H, W)`` time-major, ``h (B, H)``, ``v (T, B, V)``."""
        steps, batch = self.steps, video.shape[0]
        frames = video.transpose(0, 1).reshape(-1, *video.shape[2:])
        (v_name,) = self.ext_v.branch_inputs[0]
        (h_name,) = self.ext_h.branch_inputs[0]
        v_q = self.ext_v({v_name: frames}).reshape(steps, batch, -1)
        h_q = self.ext_h({h_name: video})
        (h_mean, h_std, h_shape), (v_mean, v_std, v_shape) = self.content_prior, self.first_prior
        h_p = h_mean + h_std * torch.randn(batch, *h_shape)
        v = v_mean + v_std * torch.randn(batch, *v_shape)
        names = {role: name for name, role in self.nodes.transition.items()}
        chain = [v]
        for _ in range(steps - 1):
            v = v + self.trans({names["previous"]: v, names["noise"]: torch.randn(batch, *self.noise_shape)})
            chain.append(v)
        v_p = torch.stack(chain)
        inputs = {
            name: h_p.repeat(steps, 1) if role == "content" else v_p.reshape(steps * batch, -1)
            for name, role in self.nodes.generator.items()
        }
        x_p = self.gen(inputs)
        return {"frames": frames, "h": h_q, "v": v_q}, {"frames": x_p, "h": h_p, "v": v_p}

    def g_terms(self, q, p):
        """The reconstruction term, as ``HandSSGAN.g_terms``."""
        if not self.reconstruction:
            return torch.zeros(())
        v = q["v"]
        inputs = {
            name: q["h"].repeat(self.steps, 1) if role == "content" else v.reshape(-1, v.shape[-1])
            for name, role in self.nodes.generator.items()
        }
        x_rec = self.gen(inputs)
        return self.reconstruction * (x_rec - q["frames"]).square().sum() / v.shape[1]

    def logits(self, values):
        n, v = self.nodes, values["v"]
        frame_values = {
            "frame": values["frames"],
            "content": values["h"].repeat(self.steps, 1),
            "motion": v.reshape(-1, v.shape[-1]),
        }
        motion_values = {"current": v[1:].reshape(-1, v.shape[-1]), "previous": v[:-1].reshape(-1, v.shape[-1])}
        out = []
        for index, (roles, given) in enumerate(
            ((n.frame_critic_inputs, frame_values), (n.motion_critic_inputs, motion_values))
        ):
            out.append(self.discs[str(index)]({name: given[role] for name, role in roles.items()})[:, 0])
        return out
