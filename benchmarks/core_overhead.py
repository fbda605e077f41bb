"""Step time and compile time of each registered rule against its reference.

A first, honest look at what the rule core costs: the jitted step
(``update`` + ``optax.apply_updates``, params and state donated) of each rule
and of its reference implementation, measured side by side in one process,
in interleaved rounds. Prints medians and the median of per-round ratios.

Usage::

    python benchmarks/core_overhead.py            # 10M params, 1 and ~200 leaves
    python benchmarks/core_overhead.py --quick    # 1M params, fewer rounds
    python benchmarks/core_overhead.py --rules adam lion --leaves 2000
"""

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr


def make_tree(total: int, leaves: int, seed: int = 0) -> dict[str, jax.Array]:
    """``leaves`` float32 leaves of about ``total / leaves`` elements each."""
    rng = np.random.default_rng(seed)
    size = max(total // leaves, 1)
    return {
        f"p{i:04d}": jnp.asarray(0.01 * rng.standard_normal(size), jnp.float32)
        for i in range(leaves)
    }


def compiled_step(
    tx: optax.GradientTransformation, params: Any
) -> tuple[Callable[..., Any], Any, float]:
    """The donated, jitted step, its initial state and its compile time (s)."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    start = time.perf_counter()
    compiled = (
        jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    )
    return compiled, state, time.perf_counter() - start


def bench(
    spec: jr.RuleSpec, total: int, leaves: int, rounds: int, steps: int
) -> dict[str, float]:
    """Median ms/step of the rule and its reference, and their ratio."""
    kwargs = spec.reference_cases[0]
    grads = make_tree(total, leaves, seed=1)
    candidates = {}
    for label, factory in (("ours", spec.factory), ("ref", spec.reference_factory)):
        params = make_tree(total, leaves)
        fn, state, compile_s = compiled_step(factory(**kwargs), params)
        candidates[label] = {
            "fn": fn,
            "params": params,
            "state": state,
            "compile": compile_s,
            "times": [],
        }
    for r in range(rounds):
        order = list(candidates) if r % 2 == 0 else list(reversed(candidates))
        for label in order:
            c = candidates[label]
            start = time.perf_counter()
            for _ in range(steps):
                c["params"], c["state"] = c["fn"](c["params"], c["state"], grads)
            jax.block_until_ready(c["params"])
            c["times"].append((time.perf_counter() - start) / steps * 1e3)
            time.sleep(0.02)  # let the other framework's threads go idle
    ours, ref = candidates["ours"], candidates["ref"]
    ratios = [a / b for a, b in zip(ours["times"], ref["times"], strict=True)]
    return {
        "ours_ms": statistics.median(ours["times"]),
        "ref_ms": statistics.median(ref["times"]),
        "ratio": statistics.median(ratios),
        "ours_compile_s": ours["compile"],
        "ref_compile_s": ref["compile"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", nargs="*", help="rule names (default: all)")
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--leaves", type=int, nargs="*", default=[1, 196])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1M params, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.params, args.rounds, args.steps = 1_000_000, 3, 5
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"jaxopt_rules {jr.__version__}, {jax.devices()[0].platform}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"{args.params:,} float32 params; median of {args.rounds} interleaved "
        f"rounds of {args.steps} steps\n"
    )
    header = (
        f"{'rule':15s} {'reference':28s} {'leaves':>6s} {'ours ms':>8s} "
        f"{'ref ms':>8s} {'ours/ref':>8s} {'compile s':>10s} {'ref comp s':>10s}"
    )
    print(header)
    print("-" * len(header))
    for spec in jr.REGISTRY:
        if args.rules and spec.name not in args.rules:
            continue
        for leaves in args.leaves:
            r = bench(spec, args.params, leaves, args.rounds, args.steps)
            print(
                f"{spec.name:15s} {spec.reference[:28]:28s} {leaves:6d} "
                f"{r['ours_ms']:8.2f} {r['ref_ms']:8.2f} {r['ratio']:8.2f} "
                f"{r['ours_compile_s']:10.2f} {r['ref_compile_s']:10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
