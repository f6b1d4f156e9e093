"""Per-layer convolution timings of a GMGAN spec: ggdsl's im2col, lax, sub-pixel, PyTorch.

For every conv / deconv layer of the spec's networks (from ggdsl's plan), the time of one
forward + backward (gradients for input and kernel, loss ``sum(y**2)``), jitted for JAX,
eager for torch (NCHW). Tells which convolution strategy is fastest per layer on this
machine, and where a JAX step loses to PyTorch eager.

``subpixel`` is a candidate for ``ggdsl/nets/conv.py``: the stride-s transposed "same"
convolution as s*s phase convolutions packed into ONE matrix product on a small stride-1
window of the input, then depth-to-space, instead of ``linear_transpose`` of im2col (whose
forward is k*k interior-padded adds of full-size arrays). For a strided conv it is used for
the input gradient only (a ``custom_vjp``; the kernel gradient stays im2col's). Exact: it is
checked against ``lax`` (forward and gradients) before it is timed.

Run: ``python benchmarks/bench_gmgan_layers.py [--spec gmgan_mnist] [--batch 50] [--calls 10]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def conv_layers(plan):
    """``(network, layer, in_shape)`` for each conv / deconv layer of the plan."""
    from ggdsl.nets.shapes import plan_shapes

    out = []
    for net in plan.all():
        branch_shapes, head_shapes = plan_shapes(net.plan, net.inputs)
        blocks = [*zip([b.layers for b in net.plan.branches], branch_shapes, strict=True), (net.plan.head, head_shapes)]
        for layers, shapes in blocks:
            for layer, in_shape in zip(layers, shapes, strict=False):
                if layer.kind in ("conv", "deconv"):
                    out.append((f"{net.role} {net.key}", layer, tuple(in_shape)))
    return out


def deconv_subpixel(x, w, stride: int):
    """TF-"same" transposed convolution (output ``n * stride``), NHWC x ``(k, k, C_in, C_out)``.

    ``y[s*q + r] = sum_d x[q - d] w[s*d + r + pad_lo]``: per output phase ``r`` a stride-1
    correlation; all phases share one window of the input, so one patches @ kernel product
    (the kernel holds zeros where a phase has fewer taps), then depth-to-space.
    """
    import jax.numpy as jnp
    from jax import lax

    k, s = w.shape[0], stride
    batch, n1, n2, c_in = x.shape
    c_out = w.shape[3]
    pad_lo = max((n1 - 1) * s + k - n1 * s, 0) // 2
    offsets = [d for d in range(-k, k + 1) if any(0 <= s * d + r + pad_lo < k for r in range(s))]
    low, high = offsets[0], offsets[-1]
    size = high - low + 1
    zero = jnp.zeros((c_in, c_out), w.dtype)

    def tap(d, r):
        t = s * d + r + pad_lo
        return t if 0 <= t < k else None

    rows = []
    for a in range(size):
        for b in range(size):
            d1, d2 = high - a, high - b
            cells = [
                w[tap(d1, r1), tap(d2, r2)] if tap(d1, r1) is not None and tap(d2, r2) is not None else zero
                for r1 in range(s)
                for r2 in range(s)
            ]
            rows.append(jnp.stack(cells, axis=1))
    kernel = jnp.stack(rows, 0).reshape(size * size * c_in, s * s * c_out)
    padded = jnp.pad(x, ((0, 0), (high, -low), (high, -low), (0, 0)))
    patches = jnp.concatenate(
        [lax.slice(padded, (0, a, b, 0), (batch, a + n1, b + n2, c_in)) for a in range(size) for b in range(size)],
        axis=-1,
    )
    y = (patches @ kernel).reshape(batch, n1, n2, s, s, c_out).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(batch, n1 * s, n2 * s, c_out)


def conv_subpixel_grad(stride: int):
    """im2col strided conv whose input gradient is :func:`deconv_subpixel` (even sizes only)."""
    import jax
    import jax.numpy as jnp

    from ggdsl.nets.conv import conv2d

    @jax.custom_vjp
    def conv(x, w):
        return conv2d(x, w, stride, "same", impl="im2col")

    def forward(x, w):
        return conv(x, w), (x, w)

    def backward(residual, dy):
        x, w = residual
        (dw,) = jax.vjp(lambda w: conv2d(x, w, stride, "same", impl="im2col"), w)[1](dy)
        return deconv_subpixel(dy, jnp.swapaxes(w, 2, 3), stride), dw

    conv.defvjp(forward, backward)
    return conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="gmgan_mnist")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import jax
    import jax.numpy as jnp

    from ggdsl import load_spec
    from ggdsl.cli import resolve_spec_path
    from ggdsl.nets.conv import conv2d, conv_transpose2d
    from ggdsl.nets.shapes import layer_option
    from ggdsl.plan import plan_model

    try:
        import torch
    except ImportError:
        torch = None
    plan = plan_model(load_spec(resolve_spec_path(args.spec)))
    print(f"{args.spec}, batch {args.batch}: ms per forward + backward (median of {args.repeats} x {args.calls})")
    print(f"  {'network':22s}{'layer':30s}{'auto':>9s}{'im2col':>9s}{'lax':>9s}{'subpixel':>9s}{'torch':>9s}")
    totals = {"auto": 0.0, "im2col": 0.0, "lax": 0.0, "subpixel": 0.0, "torch": 0.0}
    seen = {}
    for network, layer, in_shape in conv_layers(plan):
        k, s, c = int(layer_option(layer, "kernel")), int(layer_option(layer, "stride")), int(layer.value)
        key = (layer.kind, in_shape, k, s, c)
        name = f"{layer.kind} {'x'.join(map(str, in_shape))} -> {c}"
        if key not in seen:
            x = jax.random.normal(jax.random.key(0), (args.batch, *in_shape))
            w = 0.02 * jax.random.normal(jax.random.key(1), (k, k, in_shape[-1], c))
            op = conv2d if layer.kind == "conv" else conv_transpose2d
            times = {}
            ops = {
                impl: (lambda x, w, impl=impl, op=op, s=s: op(x, w, s, "same", impl=impl))
                for impl in ("auto", "im2col", "lax")
            }
            if layer.kind == "deconv":
                ops["subpixel"] = lambda x, w, s=s: deconv_subpixel(x, w, s)
            elif in_shape[0] % s == 0 and in_shape[1] % s == 0:
                ops["subpixel"] = conv_subpixel_grad(s)
            if "subpixel" in ops:  # exact, or not timed

                def probe(op, x=x, w=w):
                    return jax.grad(lambda a, b: jnp.sum(jnp.sin(op(a, b))), argnums=(0, 1))(x, w)

                for got, want in zip(probe(ops["subpixel"]), probe(ops["lax"]), strict=True):
                    error = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
                    if error > 1e-4:
                        raise AssertionError(f"subpixel gradient differs from lax on {name}: {error:.1e}")
            for impl, layer_op in ops.items():

                def loss(x, w, layer_op=layer_op):
                    return jnp.sum(jnp.square(layer_op(x, w)))

                step = jax.jit(jax.grad(loss, argnums=(0, 1)))
                jax.block_until_ready(step(x, w))
                runs = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        out = step(x, w)
                    jax.block_until_ready(out)
                    runs.append((time.perf_counter() - start) / args.calls)
                times[impl] = statistics.median(runs)
            if torch is not None:
                tx = torch.randn(args.batch, in_shape[-1], *in_shape[:2], requires_grad=True)
                if layer.kind == "conv":
                    module = torch.nn.Conv2d(in_shape[-1], c, k, s, padding=(k - 1) // 2)
                else:
                    module = torch.nn.ConvTranspose2d(in_shape[-1], c, k, s, padding=(k - 1) // 2, output_padding=s - 1)
                runs = []
                module(tx).square().sum().backward()
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        module(tx).square().sum().backward()
                    runs.append((time.perf_counter() - start) / args.calls)
                times["torch"] = statistics.median(runs)
            seen[key] = times
        times = seen[key]
        for impl, seconds in times.items():
            totals[impl] += seconds
        cells = "".join(f"{1e3 * times[i]:9.1f}" if i in times else f"{'-':>9s}" for i in totals)
        print(f"  {network:22s}{name:30s}{cells}")
    best = 0.0
    for _, layer, in_shape in conv_layers(plan):
        k, s, c = int(layer_option(layer, "kernel")), int(layer_option(layer, "stride")), int(layer.value)
        best += min(v for i, v in seen[(layer.kind, in_shape, k, s, c)].items() if i not in ("torch", "auto"))
    cells = "".join(f"{1e3 * totals[i]:9.1f}" if i != "subpixel" else f"{'':9s}" for i in totals)
    print(f"  {'all layers (once per use)':52s}{cells}")
    print(f"  best JAX strategy per layer, all layers: {1e3 * best:.1f} ms")


if __name__ == "__main__":
    main()
