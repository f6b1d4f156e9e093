"""A PyTorch (CPU, eager) twin of a bundled GMGAN spec's training step.

Only the benchmark imports this module; ggdsl never imports torch. Layer sizes come from
ggdsl's plan (pure Python, no JAX), so parameter counts match ``ggdsl explain``. Images are
NCHW here; "same" padding is ``(k - 1) // 2`` (and ``output_padding = stride - 1`` for the
transposed convolutions), which gives the shapes and FLOPs of TF's "same" (TF pads one more
pixel at the end where the total is odd: a one-pixel shift, not a different model).

Schedules (see ``_gmgan_jax_ref``): ``resample`` draws fresh samples for the generator
update, as ggdsl does; ``fused`` is the DCGAN-example idiom, one generator/extractor pass
reused (``detach()`` for the discriminator update). In both, the generator update turns
``requires_grad`` off on the discriminators so their weight gradients are not computed,
and the discriminator update samples under ``no_grad``. The optional terms are those of
``_gmgan_jax_ref``: R1 (``torch.autograd.grad`` with ``create_graph=True``), reconstruction
and latent reconstruction.

``TorchNet`` also serves the SSGAN twin (``_ssgan_torch_ref``): a 2-D convolution on a video
``(B, T, C, H, W)`` reads its frames along channels, ``(B, T * C, H, W)``, as ggdsl's does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ggdsl.nets.shapes import input_kind, layer_option, plan_shapes
from ggdsl.plan import ModelPlan, NetSpec


class _Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        # NHWC (H, W, C) in the plan is (C, H, W) here.
        self.shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class _Crop(nn.Module):
    def __init__(self, in_shape, out_shape):
        super().__init__()
        self.top, self.left = (in_shape[0] - out_shape[0]) // 2, (in_shape[1] - out_shape[1]) // 2
        self.size = out_shape[:2]

    def forward(self, x):
        return x[:, :, self.top : self.top + self.size[0], self.left : self.left + self.size[1]]


class _Block(nn.Module):
    def __init__(self, layer, in_shape, out_shape):
        super().__init__()
        kind = layer.kind
        self.norm = self.act = None
        self.flatten = kind == "dense"
        if kind == "dense":
            self.op = nn.Linear(math.prod(in_shape), int(layer.value))
            nn.init.normal_(self.op.weight, 0.0, 1.0 / math.sqrt(math.prod(in_shape)))
        elif kind in ("conv", "deconv"):
            k, s = int(layer_option(layer, "kernel")), int(layer_option(layer, "stride"))
            if layer_option(layer, "padding") != "same" or k % 2 == 0:
                raise NotImplementedError("the torch twin handles odd kernels with same padding")
            if kind == "conv":
                channels = in_shape[-1] * (in_shape[0] if len(in_shape) == 4 else 1)  # video: frames x channels
                self.op = nn.Conv2d(channels, int(layer.value), k, s, padding=(k - 1) // 2)
            else:
                self.op = nn.ConvTranspose2d(
                    in_shape[-1], int(layer.value), k, s, padding=(k - 1) // 2, output_padding=s - 1
                )
            nn.init.normal_(self.op.weight, 0.0, 0.02)
        elif kind in ("reshape", "flatten"):
            self.op = _Reshape(out_shape)
            return
        elif kind == "crop":
            self.op = _Crop(in_shape, out_shape)
            return
        else:
            raise NotImplementedError(f"the torch twin has no layer {kind!r}")
        nn.init.zeros_(self.op.bias)
        if layer_option(layer, "norm") == "batch":
            bn = nn.BatchNorm1d if kind == "dense" else nn.BatchNorm2d
            self.norm = bn(int(layer.value), eps=1e-5, momentum=0.1)
        self.act = layer_option(layer, "act")
        self.alpha = float(layer_option(layer, "alpha"))

    def forward(self, x):
        if self.flatten and x.ndim > 2:
            x = x.flatten(1)
        elif x.ndim == 5:  # (B, T, C, H, W) -> (B, T * C, H, W)
            x = x.flatten(1, 2)
        x = self.op(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act == "relu":
            return torch.relu(x)
        if self.act == "leaky_relu":
            return nn.functional.leaky_relu(x, self.alpha)
        if self.act == "sigmoid":
            return torch.sigmoid(x)
        if self.act == "tanh":
            return torch.tanh(x)
        return x


class TorchNet(nn.Module):
    """One network of the plan: branches, combined, then the head."""

    def __init__(self, net: NetSpec):
        super().__init__()
        branch_shapes, head_shapes = plan_shapes(net.plan, net.inputs)
        self.branch_inputs = [b.inputs for b in net.plan.branches]
        self.vector = [input_kind(net.inputs[b.inputs[0]]) == "vector" for b in net.plan.branches]
        self.branches = nn.ModuleList(
            nn.Sequential(*(_Block(l, s[i], s[i + 1]) for i, l in enumerate(b.layers)))
            for b, s in zip(net.plan.branches, branch_shapes, strict=True)
        )
        self.head = nn.Sequential(*(_Block(l, head_shapes[i], head_shapes[i + 1]) for i, l in enumerate(net.plan.head)))

    def forward(self, inputs):
        features = []
        for names, vector, branch in zip(self.branch_inputs, self.vector, self.branches, strict=True):
            arrays = [inputs[n] for n in names]
            if vector:
                arrays = [a.flatten(1) for a in arrays]
            features.append(branch(arrays[0] if len(arrays) == 1 else torch.cat(arrays, 1)))
        x = features[0] if len(features) == 1 else torch.cat([f.flatten(1) for f in features], 1)
        return self.head(x)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TorchGMGAN:
    """The twin; ``step(x)`` is one discriminator update and one generator update."""

    def __init__(self, plan: ModelPlan, nodes: tuple[str, str, str], *, schedule: str = "resample", seed: int = 0):
        torch.manual_seed(seed)
        self.k, self.h, self.x = nodes
        spec = plan.spec
        self.classes = int(spec.model[self.k].get("classes"))
        self.std = float(spec.model[self.h].get("std"))
        self.temperature = float(spec.inference.temperature)
        self.mu = TorchNet(plan.generators[self.h])
        self.gen = TorchNet(plan.generators[self.x])
        (self.ext_key,) = plan.extractors
        self.ext = TorchNet(plan.extractors[self.ext_key])
        self.discs = nn.ModuleDict({str(i): TorchNet(n) for i, n in enumerate(plan.discriminators.values())})
        self.groups = list(plan.discriminators)
        self.bindings = [n.bindings[0] for n in plan.discriminators.values()]
        self.weights = [1.0 / len(self.groups)] * len(self.groups)
        config = dict(spec.train.optimizer)
        betas = (config.get("b1", 0.9), config.get("b2", 0.999))
        g_params = [*self.mu.parameters(), *self.gen.parameters(), *self.ext.parameters()]
        self.d_params = list(self.discs.parameters())
        adam = {"lr": config["learning_rate"], "betas": betas, "eps": config.get("eps", 1e-8)}
        self.g_opt = torch.optim.Adam(g_params, **adam)
        self.d_opt = torch.optim.Adam(self.d_params, **adam)
        self.schedule = schedule
        self.reconstruction = float(spec.objective.reconstruction)
        self.latent_reconstruction = float(spec.objective.latent_reconstruction)
        r1 = spec.objective.r1  # one gamma, or {factor: gamma} with the unlisted factors at 0
        self.r1 = [float(r1.get(g, 0.0) if isinstance(r1, Mapping) else r1) for g in self.groups]
        if schedule == "fused" and (self.reconstruction or self.latent_reconstruction or any(self.r1)):
            raise ValueError("the fused schedule has no reconstruction, latent reconstruction or R1 terms")
        self.eye = torch.eye(self.classes)
        for module in (self.mu, self.gen, self.ext, self.discs):
            module.train()

    def param_counts(self) -> dict[str, int]:
        counts = {
            f"generator {self.h}": _count(self.mu),
            f"generator {self.x}": _count(self.gen),
            f"extractor {self.ext_key}": _count(self.ext),
        }
        counts.update({f"discriminator {g}": _count(self.discs[str(i)]) for i, g in enumerate(self.groups)})
        return counts

    def sample(self, x_data):
        batch = x_data.shape[0]
        h_q = self.ext({self.x: x_data})
        logits = self.k_logits(h_q)
        uniform = torch.rand_like(logits).clamp_(1e-20, 1.0)
        k_q = torch.softmax((logits - torch.log(-torch.log(uniform))) / self.temperature, -1)
        k_p = nn.functional.one_hot(torch.randint(0, self.classes, (batch,)), self.classes).float()
        mean_p = self.mu({self.k: k_p})
        h_p = mean_p + self.std * torch.randn_like(mean_p)
        x_p = self.gen({self.h: h_p})
        return {self.x: x_data, self.h: h_q, self.k: k_q}, {self.x: x_p, self.h: h_p, self.k: k_p}

    def k_logits(self, h):
        """log q(k | h) up to a constant (uniform prior); mu runs in evaluation mode, as in ggdsl."""
        self.mu.eval()
        means = self.mu({self.k: self.eye})
        self.mu.train()
        return -0.5 * ((h[:, None] - means[None]) / self.std).square().sum(-1)

    def logits(self, values):
        return [
            self.discs[str(i)]({n: values[nodes[0]] for n, nodes in b.items()})[:, 0]
            for i, b in enumerate(self.bindings)
        ]

    def r1_inputs(self, values, index):
        """The inputs of discriminator ``index`` at ``values`` (the tensors R1 differentiates against)."""
        return [values[nodes[0]] for nodes in self.bindings[index].values()]

    def d_update(self, q, p):
        if any(self.r1):
            q = {n: v.detach().requires_grad_(True) for n, v in q.items()}
        lq, lp = self.logits(q), self.logits(p)
        softplus = nn.functional.softplus
        loss = sum(w * (softplus(-a).mean() + softplus(b).mean()) for w, a, b in zip(self.weights, lq, lp, strict=True))
        # r1 / 2 * E_q |grad_A D(A)|^2 per group, A = all the group's inputs
        for index, (weight, gamma, logits) in enumerate(zip(self.weights, self.r1, lq, strict=True)):
            if gamma:
                grads = torch.autograd.grad(logits.sum(), self.r1_inputs(q, index), create_graph=True)
                penalty = sum(g.flatten(1).square().sum(1) for g in grads).mean()
                loss = loss + weight * 0.5 * gamma * penalty
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.d_opt.step()
        return loss

    def g_update(self, q, p):
        for param in self.d_params:
            param.requires_grad_(False)
        lq, lp = self.logits(q), self.logits(p)
        softplus = nn.functional.softplus
        loss = sum(w * (softplus(-b) + softplus(a)).mean() for w, a, b in zip(self.weights, lq, lp, strict=True))
        loss = loss + self.g_terms(q, p)
        self.g_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.g_opt.step()
        for param in self.d_params:
            param.requires_grad_(True)
        return loss

    def g_terms(self, q, p):
        """The reconstruction and latent-reconstruction terms of the generator side."""
        total = torch.zeros(())
        if self.reconstruction:
            x_rec = self.gen({self.h: q[self.h]})
            total = total + self.reconstruction * (x_rec - q[self.x]).square().flatten(1).sum(1).mean()
        if self.latent_reconstruction:
            h_rec = self.ext({self.x: p[self.x]})
            log_probs = torch.log(torch.softmax(self.k_logits(h_rec), -1) + 1e-8)
            cross_entropy = -(p[self.k] * log_probs).sum(-1).mean()
            squares = (h_rec - p[self.h]).square().flatten(1).sum(1).mean()
            total = total + self.latent_reconstruction * (cross_entropy + squares)
        return total

    def step(self, x_data):
        if self.schedule == "resample":
            with torch.no_grad():
                q, p = self.sample(x_data)
            d_loss = self.d_update(q, p)
            q, p = self.sample(x_data)
        else:
            q, p = self.sample(x_data)
            d_loss = self.d_update({n: v.detach() for n, v in q.items()}, {n: v.detach() for n, v in p.items()})
        g_loss = self.g_update(q, p)
        return d_loss, g_loss
