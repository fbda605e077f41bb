"""Layouts for many-leaf optimizer steps: what batching leaves buys on this device.

The rule core runs a rule leaf by leaf, as optax does. This script measures
the alternatives that were considered for trees with many leaves, all as
hand-written Adam steps (``update`` and ``apply_updates`` in one donated jit)
so that only the layout differs:

* ``per-leaf``: state as a pytree like the params (the core's layout);
* ``flat state``: mu and nu in one flat buffer each; the gradients are
  concatenated into it and each parameter is updated from a slice;
* ``interleaved``: per leaf, mu and nu packed in one ``(..., 2)`` array, so
  XLA writes one state buffer per leaf instead of two.

Prints ms/step (median of interleaved rounds after a warm-up round; see
``_timing.py``), compile time and temporary bytes, and checks that each layout
gives the per-leaf layout's parameters.

Usage::

    python -m benchmarks.leaf_batching                  # 2000 and 196 leaves, 10M
    python -m benchmarks.leaf_batching --leaves 2000 --params 1M
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _table
from benchmarks._timing import Timed, donated_loop, measure, median_ms, paired_ratio


B1, B2, LR, EPS = 0.9, 0.999, 1e-3, 1e-8


def _direction(mu: jax.Array, nu: jax.Array, t: jax.Array) -> jax.Array:
    return (mu / (1 - B1**t)) / (jnp.sqrt(nu / (1 - B2**t)) + EPS)


def per_leaf(params: list, state: Any, grads: list) -> tuple[list, Any]:
    """State as trees of the params' shapes."""
    count, mus, nus = state
    t = (count + 1).astype(jnp.float32)
    new_p, new_mu, new_nu = [], [], []
    for p, m, v, g in zip(params, mus, nus, grads, strict=True):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        new_p.append(p - LR * _direction(m, v, t))
        new_mu.append(m)
        new_nu.append(v)
    return new_p, (count + 1, new_mu, new_nu)


def flat_state(params: list, state: Any, grads: list) -> tuple[list, Any]:
    """mu, nu as one flat buffer each; gradients concatenated; slices per leaf."""
    count, mu, nu = state
    t = (count + 1).astype(jnp.float32)
    g = jnp.concatenate([x.ravel() for x in grads])
    mu = B1 * mu + (1 - B1) * g
    nu = B2 * nu + (1 - B2) * g * g
    new_p, offset = [], 0
    for p in params:
        m = mu[offset : offset + p.size].reshape(p.shape)
        v = nu[offset : offset + p.size].reshape(p.shape)
        new_p.append(p - LR * _direction(m, v, t))
        offset += p.size
    return new_p, (count + 1, mu, nu)


def interleaved(params: list, state: Any, grads: list) -> tuple[list, Any]:
    """Per leaf, mu and nu packed in one (..., 2) buffer."""
    count, packed = state
    t = (count + 1).astype(jnp.float32)
    new_p, new_s = [], []
    for p, s, g in zip(params, packed, grads, strict=True):
        lane = jax.lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1)
        gb = g[..., None]
        s = jnp.where(lane == 0, B1 * s + (1 - B1) * gb, B2 * s + (1 - B2) * gb * gb)
        new_p.append(p - LR * _direction(s[..., 0], s[..., 1], t))
        new_s.append(s)
    return new_p, (count + 1, new_s)


def init_state(layout: str, params: list) -> Any:
    """Zero state in a layout."""
    count = jnp.zeros([], jnp.int32)
    if layout == "per-leaf":
        return (
            count,
            [jnp.zeros_like(p) for p in params],
            [jnp.zeros_like(p) for p in params],
        )
    if layout == "flat state":
        n = sum(p.size for p in params)
        return count, jnp.zeros(n), jnp.zeros(n)
    return count, [jnp.zeros((*p.shape, 2)) for p in params]


LAYOUTS: dict[str, Callable[..., Any]] = {
    "per-leaf": per_leaf,
    "flat state": flat_state,
    "interleaved": interleaved,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, nargs="*", default=[2000, 196])
    parser.add_argument("--params", type=float, default=10e6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, {device.platform}: "
        f"{getattr(device, 'device_kind', '')}"
    )
    columns = ["leaves", "layout", "ms/step", "x per-leaf", "compile s", "temp MB"]
    print(_table.markdown_header([*columns, "max diff"], "rlrrrrr"))
    for leaves in args.leaves:
        size = int(args.params) // leaves
        rng = np.random.default_rng(0)
        p0 = [
            (0.01 * rng.standard_normal(size)).astype(np.float32) for _ in range(leaves)
        ]
        grads = [
            jnp.asarray(0.01 * rng.standard_normal(size), jnp.float32)
            for _ in range(leaves)
        ]
        runs: dict[str, tuple[Timed, list[Any], float, float]] = {}
        for name, fn in LAYOUTS.items():
            params = [jnp.asarray(x) for x in p0]
            state = init_state(name, params)
            start = time.perf_counter()
            compiled = (
                jax.jit(fn, donate_argnums=(0, 1)).lower(params, state, grads).compile()
            )
            compile_s = time.perf_counter() - start
            memory = compiled.memory_analysis()
            temp = (
                memory.temp_size_in_bytes / 1e6 if memory is not None else float("nan")
            )
            run, sync, box = donated_loop(compiled, params, state, grads)
            runs[name] = (
                Timed(name, run, sync, steps=args.steps),
                box,
                compile_s,
                temp,
            )
        measure([r[0] for r in runs.values()], args.rounds, warmup_rounds=1)
        base, base_box, _, _ = runs["per-leaf"]
        for name, (timed, box, compile_s, temp) in runs.items():
            ratio = paired_ratio(timed, base)
            diff = max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(box[0], base_box[0], strict=True)
            )
            cells = [f"{median_ms(timed):.2f}", f"{ratio:.2f}", f"{compile_s:.2f}"]
            print(
                _table.markdown_row(
                    [str(leaves), name, *cells, f"{temp:.0f}", f"{diff:.1e}"]
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
