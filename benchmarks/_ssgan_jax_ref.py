"""A hand-written JAX training step of a bundled SSGAN spec (``ssgan_moving_digits_t16_cpu``).

Plain ``jax.numpy`` over dicts of arrays, no Flax; the networks are ``_gmgan_jax_ref``'s
(``Net``, ``init_net``: layer sizes from ggdsl's plan, im2col convolutions by default), and
the step's schedule is ``HandGMGAN``'s ``resample`` one (what ggdsl's ``make_step``
computes: the discriminator update draws p and q samples, the generator update draws fresh
ones). Everything model-specific is written out below.

The model (SSGAN, Li et al. 2018): content ``h ~ N(0, I)`` once per video, motion
``v[1] ~ N(0, I)`` and ``v[t] = v[t-1] + MLP([v[t-1], eps_t])`` for t = 2..T, frames
``x[t] = G(h, v[t])``. Recognition (mean field): ``h = E_h(x[1:T])`` (the frames along
channels) and ``v[t] = E_v(x[t])``. Local discriminators ``D(x[t], h, v[t])`` and
``D(v[t], v[t-1])``, each shared over t: BCE losses averaged over the copies, the two groups
weighted by the spec (1/2 each), non-saturating on the generator side.

Written the way one would by hand: the T frames of a batch are one array ``(T * B, ...)``
(time-major, as ggdsl stacks the copies), so the frame generator, the frame extractor and the
frame discriminator run once each on all frames (batch norm takes its statistics over all
of them, as in ggdsl). The T - 1 transitions run as ``lax.scan`` (``transition="scan"``) or
as an unrolled Python loop (``transition="loop"``); the benchmark times both
(``jax-hand`` / ``jax-hand-loop``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from _gmgan_jax_ref import HandGMGAN, Net, init_net, param_count
from _ssgan_plan import ssgan_nodes
from jax import lax

from ggdsl.plan import ModelPlan


def time_major(video: jax.Array) -> jax.Array:
    """``(B, T, ...)`` -> ``(T * B, ...)``: frame t of example b at row ``t * B + b``."""
    return jnp.swapaxes(video, 0, 1).reshape(-1, *video.shape[2:])


class HandSSGAN(HandGMGAN):
    """The hand-written step of an SSGAN plan (the step itself is ``HandGMGAN.step_fn``'s)."""

    def __init__(self, plan: ModelPlan, *, transition: str = "scan", conv: str = "im2col"):
        if transition not in ("scan", "loop"):
            raise ValueError(f"transition: scan or loop, not {transition!r}")
        self.plan = plan
        self.nodes = n = ssgan_nodes(plan)
        spec = plan.spec
        self.steps = n.steps
        content, first = spec.model[n.content], spec.model[n.motion].first
        self.content_prior = (float(content.get("mean")), float(content.get("std")), content.shape)
        self.first_prior = (float(first.get("mean")), float(first.get("std")), first.shape)
        trans = plan.generators[plan.generator_of[f"{n.motion}[2]"]]
        self.noise_shape = trans.inputs["eps"]
        self.trans = Net(trans, conv)
        self.gen = Net(plan.generators[plan.generator_of[f"{n.frame}[1]"]], conv)
        self.ext_v = Net(plan.extractors[n.motion_extractor], conv)
        self.ext_h = Net(plan.extractors[n.content_extractor], conv)
        self.discs = {group: Net(plan.discriminators[group], conv) for group in (n.frame_critic, n.motion_critic)}
        self.weights = {g: 1.0 / len(self.discs) for g in self.discs}
        if spec.objective.weights != "uniform":
            self.weights = {g: float(spec.objective.weights.get(g, 0.0)) for g in self.discs}
        config = dict(spec.train.optimizer)
        config.pop("name")
        self.tx = optax.adam(**config)
        self.schedule = "resample"
        self.transition = transition
        self.reconstruction = float(spec.objective.reconstruction)
        self.latent_reconstruction = self.r1 = 0.0

    # -- parameters
    def init_state(self, seed: int) -> dict:
        nets = {"trans": self.trans, "gen": self.gen, "ext_v": self.ext_v, "ext_h": self.ext_h}
        keys = jax.random.split(jax.random.key(seed), len(nets) + len(self.discs))
        g_params, g_stats = {}, {}
        for (name, net), key in zip(nets.items(), keys, strict=False):
            g_params[name], g_stats[name] = init_net(net.spec, key)
        d_params, d_stats = {}, {}
        for (group, net), key in zip(self.discs.items(), keys[len(nets) :], strict=True):
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
        g, n = state["g_params"], self.nodes
        counts = {
            f"generator {n.motion}": param_count(g["trans"]),
            f"generator {n.frame}": param_count(g["gen"]),
            f"extractor {n.motion_extractor}": param_count(g["ext_v"]),
            f"extractor {n.content_extractor}": param_count(g["ext_h"]),
        }
        counts.update({f"discriminator {group}": param_count(state["d_params"][group]) for group in self.discs})
        return counts

    # -- sampling
    def motion_chain(self, params, stats, v_first: jax.Array, noise: jax.Array) -> jax.Array:
        """``v[2..T]`` from ``v[1]`` and the T - 1 noise draws ``(T - 1, B, E)``: ``(T - 1, B, V)``."""
        names = {role: name for name, role in self.nodes.transition.items()}

        def transition(v, eps):
            out, _ = self.trans(params, stats, {names["previous"]: v, names["noise"]: eps}, True)
            return v + out

        if self.transition == "scan":

            def body(v, eps):
                v = transition(v, eps)
                return v, v

            return lax.scan(body, v_first, noise)[1]
        chain, v = [], v_first
        for t in range(noise.shape[0]):
            v = transition(v, noise[t])
            chain.append(v)
        return jnp.stack(chain)

    def sample(self, gp, gs, video, key):
        """q and p values (frames time-major ``(T * B, H, W, C)``, ``h (B, H)``, ``v (T, B, V)``)."""
        steps, batch = self.steps, video.shape[0]
        key_h, key_v, key_eps = jax.random.split(key, 3)
        new_gs = dict(gs)
        (v_name,) = self.ext_v.spec.inputs
        (h_name,) = self.ext_h.spec.inputs
        frames = time_major(video)
        v_q, new_gs["ext_v"] = self.ext_v(gp["ext_v"], gs["ext_v"], {v_name: frames}, True)
        h_q, new_gs["ext_h"] = self.ext_h(gp["ext_h"], gs["ext_h"], {h_name: video}, True)
        (h_mean, h_std, h_shape), (v_mean, v_std, v_shape) = self.content_prior, self.first_prior
        h_p = h_mean + h_std * jax.random.normal(key_h, (batch, *h_shape))
        v_first = v_mean + v_std * jax.random.normal(key_v, (batch, *v_shape))
        noise = jax.random.normal(key_eps, (steps - 1, batch, *self.noise_shape))
        v_p = jnp.concatenate([v_first[None], self.motion_chain(gp["trans"], gs["trans"], v_first, noise)])
        inputs = {
            name: jnp.tile(h_p, (steps, 1)) if role == "content" else v_p.reshape(steps * batch, -1)
            for name, role in self.nodes.generator.items()
        }
        x_p, new_gs["gen"] = self.gen(gp["gen"], gs["gen"], inputs, True)
        q = {"frames": frames, "h": h_q, "v": v_q.reshape(steps, batch, -1)}
        p = {"frames": x_p, "h": h_p, "v": v_p}
        return q, p, new_gs

    def g_terms(self, gp, gs, q, p):
        """The reconstruction term: every frame from q's ``h`` and its ``v_t``, squared error
        summed over frames and pixels, averaged over the videos (as ggdsl's objective)."""
        total, new_gs = jnp.zeros(()), dict(gs)
        if self.reconstruction:
            v = q["v"]
            inputs = {
                name: jnp.tile(q["h"], (self.steps, 1)) if role == "content" else v.reshape(-1, v.shape[-1])
                for name, role in self.nodes.generator.items()
            }
            x_rec, new_gs["gen"] = self.gen(gp["gen"], new_gs["gen"], inputs, True)
            total = self.reconstruction * jnp.sum(jnp.square(x_rec - q["frames"])) / v.shape[1]
        return total, new_gs

    def logits(self, dp, ds, values):
        """Per group, the logits of all copies: ``(T * B,)`` frame tuples, ``((T - 1) * B,)`` motion pairs."""
        n, v = self.nodes, values["v"]
        frame_values = {
            "frame": values["frames"],
            "content": jnp.tile(values["h"], (self.steps, 1)),
            "motion": v.reshape(-1, v.shape[-1]),
        }
        motion_values = {"current": v[1:].reshape(-1, v.shape[-1]), "previous": v[:-1].reshape(-1, v.shape[-1])}
        out = {}
        for group, roles, given in (
            (n.frame_critic, n.frame_critic_inputs, frame_values),
            (n.motion_critic, n.motion_critic_inputs, motion_values),
        ):
            inputs = {name: given[role] for name, role in roles.items()}
            out[group] = self.discs[group](dp[group], ds[group], inputs, True)[0][:, 0]
        return out
