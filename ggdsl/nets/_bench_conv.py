"""Time im2col against lax for DCGAN convolution layers, forward plus backward.

Run: ``python -m ggdsl.nets._bench_conv [--batch 50] [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from ggdsl.nets.conv import conv2d, conv_transpose2d

# (name, op, input shape without batch, kernel shape)
LAYERS = (
    ("conv 32x32x3 -> 16x16x64", conv2d, (32, 32, 3), (5, 5, 3, 64)),
    ("conv 16x16x64 -> 8x8x128", conv2d, (16, 16, 64), (5, 5, 64, 128)),
    ("conv 8x8x128 -> 4x4x256", conv2d, (8, 8, 128), (5, 5, 128, 256)),
    ("deconv 4x4x256 -> 8x8x128", conv_transpose2d, (4, 4, 256), (5, 5, 256, 128)),
    ("deconv 8x8x128 -> 16x16x64", conv_transpose2d, (8, 8, 128), (5, 5, 128, 64)),
    ("deconv 16x16x64 -> 32x32x3", conv_transpose2d, (16, 16, 64), (5, 5, 64, 3)),
)


def time_layer(op, x: jax.Array, w: jax.Array, impl: str, repeats: int) -> float:
    """Seconds per forward + backward (gradients for input and kernel), jitted.

    The fastest of ``repeats`` calls, so that other work on the machine inflates it less.
    """

    def loss(x, w):
        return jnp.sum(jnp.square(op(x, w, 2, "same", impl=impl)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    jax.block_until_ready(step(x, w))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(x, w))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, batch {args.batch}, fwd+bwd ms per call (best of {args.repeats})")
    totals = {"im2col": 0.0, "lax": 0.0}
    for name, op, in_shape, kernel_shape in LAYERS:
        key_x, key_w = jax.random.split(jax.random.key(0))
        x = jax.random.normal(key_x, (args.batch, *in_shape))
        w = 0.02 * jax.random.normal(key_w, kernel_shape)
        times = {impl: time_layer(op, x, w, impl, args.repeats) for impl in totals}
        for impl, seconds in times.items():
            totals[impl] += seconds
        print(
            f"{name:28s} im2col {1e3 * times['im2col']:8.2f}  lax {1e3 * times['lax']:8.2f}"
            f"  speedup {times['lax'] / times['im2col']:5.1f}x"
        )
    print(
        f"{'all six':28s} im2col {1e3 * totals['im2col']:8.2f}  lax {1e3 * totals['lax']:8.2f}"
        f"  speedup {totals['lax'] / totals['im2col']:5.1f}x"
    )


if __name__ == "__main__":
    main()
