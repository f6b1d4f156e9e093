"""A hand-written JAX training step of a bundled GMGAN spec: the tight reference.

Plain ``jax.numpy`` over dicts of arrays, no Flax: parameters are ``{"w", "b"}`` per layer,
batch-norm running statistics a separate tree, and the convolutions are written here the
way ``ggdsl/nets/conv.py`` does on CPU (im2col: pad, one strided slice per kernel offset,
concatenate, one matrix product; the transposed convolution is the ``linear_transpose`` of
that). Layer sizes come from ggdsl's plan (pure data, the same numbers ``ggdsl explain``
prints), so the model is the same; everything that runs is written out below.

The model (GMGAN): ``k ~ Cat(1/K)``, ``h = mu(k) + std * eps``, ``x = G(h)``; recognition
``h = E(x)``, ``q(k | h)`` exact (``softmax(-|h - mu_k|^2 / (2 std^2))``) relaxed with
Gumbel-softmax; one discriminator per factor group (``D(x, h)``, ``D(h, k)`` for the local
objective, ``D(x, h, k)`` for the global one); BCE losses, non-saturating for the generator
side; one discriminator update then one generator update, both Adam. The spec's optional
terms are written out too (``gmgan_mnist_cpu`` has all three): the R1 penalty
``r1 / 2 * E_q |grad D(A)|^2`` per group on the discriminator side, and on the generator
side the reconstruction ``|x - G(E(x))|^2`` and the latent reconstruction
(``|h - E(G(h))|^2`` plus the cross-entropy of the exact q(k | E(G(h))) against p's k).

The networks (``Net``, ``init_net``) serve the SSGAN reference (``_ssgan_jax_ref``) as well:
a 2-D convolution on a video input ``(B, T, H, W, C)`` reads its frames along channels,
as ggdsl's does.

Two schedules:

- ``resample``: what ggdsl's ``Compiled.make_step`` computes. The discriminator update draws
  p and q samples, the generator update draws fresh ones (a second forward pass of the
  generator and the extractor).
- ``fused``: the usual hand-written GAN step (PyTorch's DCGAN example): one forward pass of
  the generator and the extractor, kept with ``jax.vjp``; the discriminator update uses
  the samples as constants, the generator update back-propagates the updated
  discriminators' input gradients through the kept pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from _gmgan_plan import gmgan_nodes
from jax import lax

from ggdsl.nets.shapes import input_kind, layer_option, plan_shapes
from ggdsl.plan import ModelPlan, NetSpec

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


# --------------------------------------------------------------------------- convolutions
def same_pads(sizes, kernel: int, stride: int) -> tuple[tuple[int, int], ...]:
    """TF / DCGAN "same" padding: output ``ceil(n / stride)``."""
    pads = []
    for size in sizes:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def conv_im2col(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """NHWC x HWIO strided "same" convolution as patches @ kernel."""
    kernel = w.shape[0]
    pads = same_pads(x.shape[1:3], kernel, stride)
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out = [(n - kernel) // stride + 1 for n in padded.shape[1:3]]
    columns = [
        lax.slice(
            padded,
            (0, i, j, 0),
            (padded.shape[0], i + (out[0] - 1) * stride + 1, j + (out[1] - 1) * stride + 1, padded.shape[3]),
            (1, stride, stride, 1),
        )
        for i, j in itertools.product(range(kernel), range(kernel))
    ]
    patches = jnp.concatenate(columns, axis=-1)
    return jnp.matmul(patches, w.reshape(-1, w.shape[-1]))


def deconv_im2col(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Transposed "same" convolution (output ``n * stride``): the adjoint of ``conv_im2col``."""
    forward_kernel = jnp.swapaxes(w, 2, 3)
    target = jax.ShapeDtypeStruct((x.shape[0], x.shape[1] * stride, x.shape[2] * stride, w.shape[3]), x.dtype)
    (y,) = jax.linear_transpose(lambda image: conv_im2col(image, forward_kernel, stride), target)(x)
    return y


def conv_lax(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    pads = same_pads(x.shape[1:3], w.shape[0], stride)
    return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def deconv_lax(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    return lax.conv_transpose(
        x,
        jnp.swapaxes(w, 2, 3),
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        transpose_kernel=True,
    )


def conv_auto(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """ggdsl's own CPU choice per shape (``ggdsl.nets.conv``, ``impl="auto"``): lax, im2col or subpixel."""
    from ggdsl.nets.conv import conv2d

    return conv2d(x, w, stride, "same")


def deconv_auto(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    from ggdsl.nets.conv import conv_transpose2d

    return conv_transpose2d(x, w, stride, "same")


CONVS = {"im2col": (conv_im2col, deconv_im2col), "lax": (conv_lax, deconv_lax), "auto": (conv_auto, deconv_auto)}


# --------------------------------------------------------------------------- networks
def _layer_kinds(net: NetSpec):
    """Per block list (branches..., head): ``[(layer, in_shape, out_shape), ...]``."""
    branch_shapes, head_shapes = plan_shapes(net.plan, net.inputs)
    lists = [
        list(zip(b.layers, s[:-1], s[1:], strict=True)) for b, s in zip(net.plan.branches, branch_shapes, strict=True)
    ]
    lists.append(list(zip(net.plan.head, head_shapes[:-1], head_shapes[1:], strict=True)))
    return lists


def init_net(net: NetSpec, key: jax.Array):
    """Parameters and batch-norm statistics of one network (same shapes as ggdsl's)."""
    params, stats = [], []
    for blocks in _layer_kinds(net):
        block_params, block_stats = [], []
        for layer, in_shape, out_shape in blocks:
            key, sub = jax.random.split(key)
            p, s = {}, {}
            if layer.kind == "dense":
                fan_in = math.prod(in_shape)
                p["w"] = jax.nn.initializers.lecun_normal()(sub, (fan_in, int(layer.value)), jnp.float32)
                p["b"] = jnp.zeros((int(layer.value),), jnp.float32)
            elif layer.kind in ("conv", "deconv"):
                k = int(layer_option(layer, "kernel"))
                channels = in_shape[-1] * (in_shape[0] if len(in_shape) == 4 else 1)  # video: frames x channels
                p["w"] = 0.02 * jax.random.normal(sub, (k, k, channels, int(layer.value)), jnp.float32)
                p["b"] = jnp.zeros((int(layer.value),), jnp.float32)
            elif layer.kind not in ("reshape", "flatten", "crop"):
                raise NotImplementedError(f"the hand-written reference has no layer {layer.kind!r}")
            if layer.kind in ("dense", "conv", "deconv") and layer_option(layer, "norm") == "batch":
                c = out_shape[-1]
                p["scale"], p["bias"] = jnp.ones((c,), jnp.float32), jnp.zeros((c,), jnp.float32)
                s["mean"], s["var"] = jnp.zeros((c,), jnp.float32), jnp.ones((c,), jnp.float32)
            elif layer.kind in ("dense", "conv", "deconv") and layer_option(layer, "norm") != "none":
                raise NotImplementedError("the hand-written reference knows batch norm only")
            block_params.append(p)
            block_stats.append(s)
        params.append(block_params)
        stats.append(block_stats)
    return params, stats


def _activation(name: str, x: jax.Array, alpha: float) -> jax.Array:
    if name == "relu":
        return jax.nn.relu(x)
    if name == "leaky_relu":
        return jnp.where(x >= 0, x, alpha * x)
    if name == "sigmoid":
        return jax.nn.sigmoid(x)
    if name == "tanh":
        return jnp.tanh(x)
    return x


def _combine(names, inputs: Mapping[str, jax.Array], shapes) -> jax.Array:
    arrays = [inputs[n] for n in names]
    if input_kind(shapes[names[0]]) == "vector":
        arrays = [a.reshape(a.shape[0], -1) for a in arrays]
    return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis=-1)


class Net:
    """Apply one network of the plan: ``net(params, stats, inputs, train) -> (out, stats)``."""

    def __init__(self, net: NetSpec, conv: str = "im2col"):
        self.spec = net
        self.blocks = _layer_kinds(net)
        self.conv, self.deconv = CONVS[conv]

    def _layer(self, layer, out_shape, p, s, x, train):
        batch = x.shape[0]
        if layer.kind in ("reshape", "flatten"):
            return x.reshape(batch, *out_shape), s
        if layer.kind == "crop":  # centre crop of the spatial axes
            top, left = (x.shape[1] - out_shape[0]) // 2, (x.shape[2] - out_shape[1]) // 2
            return x[:, top : top + out_shape[0], left : left + out_shape[1], :], s
        if layer.kind == "dense":
            y = x.reshape(batch, -1) @ p["w"] + p["b"]
        elif layer.kind == "conv":
            if x.ndim == 5:  # (B, T, H, W, C) -> (B, H, W, T * C): the frames along channels
                x = jnp.moveaxis(x, 1, 3).reshape(*x.shape[:1], *x.shape[2:4], -1)
            y = self.conv(x, p["w"], int(layer_option(layer, "stride"))) + p["b"]
        else:
            y = self.deconv(x, p["w"], int(layer_option(layer, "stride"))) + p["b"]
        if "scale" in p:
            axes = tuple(range(y.ndim - 1))
            if train:
                mean = jnp.mean(y, axes)
                var = jnp.maximum(jnp.mean(jnp.square(y), axes) - jnp.square(mean), 0.0)
                s = {
                    "mean": BN_MOMENTUM * s["mean"] + (1 - BN_MOMENTUM) * lax.stop_gradient(mean),
                    "var": BN_MOMENTUM * s["var"] + (1 - BN_MOMENTUM) * lax.stop_gradient(var),
                }
            else:
                mean, var = s["mean"], s["var"]
            y = (y - mean) * lax.rsqrt(var + BN_EPSILON) * p["scale"] + p["bias"]
        return _activation(layer_option(layer, "act"), y, float(layer_option(layer, "alpha"))), s

    def __call__(self, params, stats, inputs: Mapping[str, jax.Array], train: bool):
        shapes = self.spec.inputs
        features, new_stats = [], []
        branches = self.spec.plan.branches
        for index, branch in enumerate(branches):
            x = _combine(branch.inputs, inputs, shapes)
            block_stats = []
            for (layer, _, out_shape), p, s in zip(self.blocks[index], params[index], stats[index], strict=True):
                x, s = self._layer(layer, out_shape, p, s, x, train)
                block_stats.append(s)
            features.append(x)
            new_stats.append(block_stats)
        if len(features) == 1:
            x = features[0]
        else:
            x = jnp.concatenate([f.reshape(f.shape[0], -1) for f in features], axis=-1)
        block_stats = []
        for (layer, _, out_shape), p, s in zip(self.blocks[-1], params[-1], stats[-1], strict=True):
            x, s = self._layer(layer, out_shape, p, s, x, train)
            block_stats.append(s)
        new_stats.append(block_stats)
        return x, new_stats


# --------------------------------------------------------------------------- the model
def param_count(tree) -> int:
    return sum(int(a.size) for a in jax.tree.leaves(tree))


class HandGMGAN:
    """The hand-written step of a GMGAN plan; see the module docstring for ``schedule``."""

    def __init__(self, plan: ModelPlan, *, schedule: str = "resample", conv: str = "im2col"):
        self.plan = plan
        self.k, self.h, self.x = gmgan_nodes(plan)
        spec = plan.spec
        self.classes = int(spec.model[self.k].get("classes"))
        self.std = float(spec.model[self.h].get("std"))
        self.temperature = float(spec.inference.temperature)
        self.mu = Net(plan.generators[self.h], conv)
        self.gen = Net(plan.generators[self.x], conv)
        (self.ext_key,) = plan.extractors
        self.ext = Net(plan.extractors[self.ext_key], conv)
        self.discs = {g: Net(n, conv) for g, n in plan.discriminators.items()}
        self.bindings = {g: n.bindings[0] for g, n in plan.discriminators.items()}
        self.weights = {g: 1.0 / len(self.discs) for g in self.discs}
        if spec.objective.weights != "uniform" and spec.objective.divergence != "global":
            self.weights = {g: float(spec.objective.weights.get(g, 0.0)) for g in self.discs}
        config = dict(spec.train.optimizer)
        if config.pop("name") != "adam" or spec.train.critic_optimizer is not None:
            raise ValueError("the hand-written reference uses one Adam for both sides")
        self.tx = optax.adam(**config)
        self.schedule = schedule
        self.reconstruction = float(spec.objective.reconstruction)
        self.latent_reconstruction = float(spec.objective.latent_reconstruction)
        r1 = spec.objective.r1  # one gamma, or {factor: gamma} with the unlisted factors at 0
        self.r1 = {g: float(r1.get(g, 0.0) if isinstance(r1, Mapping) else r1) for g in self.discs}
        if schedule == "fused" and (self.reconstruction or self.latent_reconstruction or any(self.r1.values())):
            raise ValueError("the fused schedule has no reconstruction, latent reconstruction or R1 terms")

    # -- parameters
    def init_state(self, seed: int) -> dict:
        keys = jax.random.split(jax.random.key(seed), 3 + len(self.discs))
        g_params, g_stats = {}, {}
        for name, net, key in (("mu", self.mu, keys[0]), ("gen", self.gen, keys[1]), ("ext", self.ext, keys[2])):
            g_params[name], g_stats[name] = init_net(net.spec, key)
        d_params, d_stats = {}, {}
        for (group, net), key in zip(self.discs.items(), keys[3:], strict=True):
            d_params[group], d_stats[group] = init_net(net.spec, key)
        return {
            "g_params": g_params,
            "g_stats": g_stats,
            "d_params": d_params,
            "d_stats": d_stats,
            "g_opt": self.tx.init(g_params),
            "d_opt": self.tx.init(d_params),
            "step": jnp.zeros((), jnp.int32),
        }

    def param_counts(self, state: dict) -> dict[str, int]:
        g, d = state["g_params"], state["d_params"]
        counts = {
            f"generator {self.h}": param_count(g["mu"]),
            f"generator {self.x}": param_count(g["gen"]),
            f"extractor {self.ext_key}": param_count(g["ext"]),
        }
        counts.update({f"discriminator {group}": param_count(d[group]) for group in self.discs})
        return counts

    # -- sampling
    def sample(self, gp, gs, x_data, key):
        """q and p values of every node, and the new batch-norm statistics."""
        key_q, key_p, key_k, key_h = jax.random.split(key, 4)
        batch = x_data.shape[0]
        new_gs = dict(gs)
        h_q, new_gs["ext"] = self.ext(gp["ext"], gs["ext"], {self.x: x_data}, True)
        logits = self.k_logits(gp, gs, h_q)
        gumbel = jax.random.gumbel(key_q, logits.shape, logits.dtype)
        k_q = jax.nn.softmax((logits + gumbel) / self.temperature, axis=-1)
        index = jax.random.randint(key_k, (batch,), 0, self.classes)
        k_p = jax.nn.one_hot(index, self.classes, dtype=jnp.float32)
        mean_p, _ = self.mu(gp["mu"], gs["mu"], {self.k: k_p}, True)
        h_p = mean_p + self.std * jax.random.normal(key_h, mean_p.shape)
        x_p, new_gs["gen"] = self.gen(gp["gen"], gs["gen"], {self.h: h_p}, True)
        q = {self.x: x_data, self.h: h_q, self.k: k_q}
        p = {self.x: x_p, self.h: h_p, self.k: k_p}
        return q, p, new_gs

    def k_logits(self, gp, gs, h):
        """log q(k | h) up to a constant: ``-|h - mu_k|^2 / (2 std^2)`` (uniform prior)."""
        means, _ = self.mu(gp["mu"], gs["mu"], {self.k: jnp.eye(self.classes, dtype=jnp.float32)}, False)
        return -0.5 * jnp.sum(jnp.square((h[:, None] - means[None]) / self.std), axis=-1)

    def logits(self, dp, ds, values):
        out = {}
        for group, net in self.discs.items():
            inputs = {name: values[nodes[0]] for name, nodes in self.bindings[group].items()}
            out[group] = net(dp[group], ds[group], inputs, True)[0][:, 0]
        return out

    def q_logits_r1(self, dp, ds, q):
        """The q-side logits and, per group, the R1 penalty ``E_q |grad_A D(A)|^2`` (one forward pass)."""
        lq, penalties = {}, {}
        for group, net in self.discs.items():
            inputs = {name: q[nodes[0]] for name, nodes in self.bindings[group].items()}
            if not self.r1[group]:
                lq[group] = net(dp[group], ds[group], inputs, True)[0][:, 0]
                continue

            def critic(given, net=net, group=group):
                return net(dp[group], ds[group], given, True)[0][:, 0]

            lq[group], pullback = jax.vjp(critic, inputs)
            (grads,) = pullback(jnp.ones_like(lq[group]))
            penalties[group] = jnp.mean(sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), -1) for g in grads.values()))
        return lq, penalties

    def d_loss(self, dp, ds, q, p):
        if any(self.r1.values()):
            lq, penalties = self.q_logits_r1(dp, ds, q)
        else:
            lq, penalties = self.logits(dp, ds, q), {}
        lp = self.logits(dp, ds, p)
        loss = sum(
            self.weights[g] * (jnp.mean(jax.nn.softplus(-lq[g])) + jnp.mean(jax.nn.softplus(lp[g]))) for g in self.discs
        )
        return loss + sum(self.weights[g] * 0.5 * self.r1[g] * penalty for g, penalty in penalties.items())

    def g_loss(self, dp, ds, q, p):
        lq, lp = self.logits(dp, ds, q), self.logits(dp, ds, p)
        return sum(self.weights[g] * jnp.mean(jax.nn.softplus(-lp[g]) + jax.nn.softplus(lq[g])) for g in self.discs)

    def g_terms(self, gp, gs, q, p):
        """The generator side's reconstruction and latent-reconstruction terms, and the new statistics."""
        total, new_gs = jnp.zeros(()), dict(gs)

        def sum_squares(a):
            return jnp.mean(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), axis=-1))

        if self.reconstruction:
            x_rec, new_gs["gen"] = self.gen(gp["gen"], new_gs["gen"], {self.h: q[self.h]}, True)
            total = total + self.reconstruction * sum_squares(x_rec - q[self.x])
        if self.latent_reconstruction:
            h_rec, new_gs["ext"] = self.ext(gp["ext"], new_gs["ext"], {self.x: p[self.x]}, True)
            probs = jax.nn.softmax(self.k_logits(gp, gs, h_rec), axis=-1)
            cross_entropy = -jnp.mean(jnp.sum(p[self.k] * jnp.log(probs + 1e-8), axis=-1))
            total = total + self.latent_reconstruction * (cross_entropy + sum_squares(h_rec - p[self.h]))
        return total, new_gs

    # -- the step
    def step_fn(self, base_key: jax.Array):
        """The (unjitted) step ``(state, x) -> (state, metrics)``."""
        tx = self.tx

        def d_update(state, q, p):
            d_loss, grads = jax.value_and_grad(self.d_loss)(state["d_params"], state["d_stats"], q, p)
            updates, d_opt = tx.update(grads, state["d_opt"], state["d_params"])
            return optax.apply_updates(state["d_params"], updates), d_opt, d_loss

        def resample(state, x_data):
            key = jax.random.fold_in(base_key, state["step"])
            key_d, key_g = jax.random.split(key)
            q, p, _ = self.sample(state["g_params"], state["g_stats"], x_data, key_d)
            d_params, d_opt, d_loss = d_update(state, q, p)

            def g_objective(gp):
                q, p, new_gs = self.sample(gp, state["g_stats"], x_data, key_g)
                terms, new_gs = self.g_terms(gp, new_gs, q, p)
                return self.g_loss(d_params, state["d_stats"], q, p) + terms, new_gs

            (g_loss, g_stats), grads = jax.value_and_grad(g_objective, has_aux=True)(state["g_params"])
            return finish(state, d_params, d_opt, grads, g_stats, d_loss, g_loss)

        def fused(state, x_data):
            key = jax.random.fold_in(base_key, state["step"])
            x_node, k_node = self.x, self.k

            def forward(gp):
                q, p, new_gs = self.sample(gp, state["g_stats"], x_data, key)
                differentiable = (
                    {n: v for n, v in q.items() if n != x_node},
                    {n: v for n, v in p.items() if n != k_node},
                )
                return differentiable, (p[k_node], new_gs)

            (dq, dpv), pullback, (k_p, g_stats) = jax.vjp(forward, state["g_params"], has_aux=True)

            def full(dq, dpv):
                return {**dq, x_node: x_data}, {**dpv, k_node: k_p}

            d_params, d_opt, d_loss = d_update(state, *full(dq, dpv))
            g_loss, cotangent = jax.value_and_grad(
                lambda values: self.g_loss(d_params, state["d_stats"], *full(*values))
            )((dq, dpv))
            (grads,) = pullback(cotangent)
            return finish(state, d_params, d_opt, grads, g_stats, d_loss, g_loss)

        def finish(state, d_params, d_opt, grads, g_stats, d_loss, g_loss):
            updates, g_opt = tx.update(grads, state["g_opt"], state["g_params"])
            new_state = {
                "g_params": optax.apply_updates(state["g_params"], updates),
                "g_stats": g_stats,
                "d_params": d_params,
                "d_stats": state["d_stats"],
                "g_opt": g_opt,
                "d_opt": d_opt,
                "step": state["step"] + 1,
            }
            return new_state, {"d_loss": d_loss, "g_loss": g_loss}

        return {"resample": resample, "fused": fused}[self.schedule]

    def make_step(self, base_key: jax.Array):
        return jax.jit(self.step_fn(base_key), donate_argnums=0)

    # -- parts, for the profile
    def part_fns(self, base_key: jax.Array) -> dict:
        """Jitted pieces of the resample step: the sampling pass, the D update, the G update."""

        def sample(state, x_data):
            return self.sample(state["g_params"], state["g_stats"], x_data, base_key)[:2]

        def d_update(state, x_data):
            q, p, _ = self.sample(state["g_params"], state["g_stats"], x_data, base_key)
            return jax.grad(self.d_loss)(state["d_params"], state["d_stats"], q, p)

        def g_update(state, x_data):
            def g_objective(gp):
                q, p, new_gs = self.sample(gp, state["g_stats"], x_data, base_key)
                return self.g_loss(state["d_params"], state["d_stats"], q, p) + self.g_terms(gp, new_gs, q, p)[0]

            return jax.grad(g_objective)(state["g_params"])

        return {
            "G+E forward (sampling)": jax.jit(sample),
            "D update grads": jax.jit(d_update),
            "G update grads": jax.jit(g_update),
        }
