"""What log_step costs: the logged Adam step against the plain one.

The jitted, donated step (``update`` + ``optax.apply_updates``) of
``jaxopt_rules.adam`` on the ~200-leaf transformer tree of ``step.py`` (10M
params by default) and on one leaf of the same size, plain and wrapped in
``jaxopt_rules.log_step`` with the global statistics, firing every 100 steps
and every step (the sink is a no-op callable, so only the mechanism is
measured); then, to split the cost, with no statistics (the gated callback
alone) and without the statistics of the updates. Each round is
exactly 100 steps, so the ``every=100`` variants fire once per round. Prints
the median ms/step and the median per-round ratio to the plain step.

A second table measures what any host callback costs at dispatch, whatever
log_step does: a jitted ``x + 1`` over n small arrays with and without a
``lax.cond``-gated ``jax.debug.callback`` that never fires.

Usage::

    python benchmarks/logging_overhead.py            # 10M params
    python benchmarks/logging_overhead.py --params 1M --rounds 3
"""

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
import step as step_bench

import jaxopt_rules as jr


def compiled(tx: optax.GradientTransformation, params: Any, grads: Any) -> Any:
    """The donated, jitted step."""

    def fn(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return (
        jax.jit(fn, donate_argnums=(0, 1))
        .lower(params, tx.init(params), grads)
        .compile()
    )


_NO_UPDATE_STATS = ("grad_norm", "param_norm", "learning_rate", "nonfinite")


def dispatch_cost(counts: list[int], rounds: int) -> None:
    """Prints the per-call cost of having a (never firing) callback in a jit."""

    def plain(xs: list[jax.Array], c: jax.Array) -> tuple[list[jax.Array], Any]:
        return [x + 1 for x in xs], c + 1

    def gated(xs: list[jax.Array], c: jax.Array) -> tuple[list[jax.Array], Any]:
        jax.lax.cond(
            c < 0, lambda c: jax.debug.callback(lambda c: None, c), lambda c: None, c
        )
        return plain(xs, c)

    print()
    print(
        "| arrays in + out | plain us/call | with a gated callback | extra us/array |"
    )
    print("|---:|---:|---:|---:|")
    for n in counts:
        medians = []
        for fn in (plain, gated):
            step = jax.jit(fn, donate_argnums=(0,))
            xs, c = step([jnp.ones(8) for _ in range(n)], jnp.int32(1))
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(200):
                    xs, c = step(xs, c)
                jax.block_until_ready(xs)
                times.append((time.perf_counter() - start) / 200 * 1e6)
            medians.append(statistics.median(times))
        extra = (medians[1] - medians[0]) / (2 * n + 2)
        print(f"| {2 * n + 2} | {medians[0]:.0f} | {medians[1]:.0f} | {extra:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="10M")
    parser.add_argument("--trees", nargs="*", default=["200", "1"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arrays", type=int, nargs="*", default=[1, 100, 400])
    args = parser.parse_args()
    total = step_bench.parse_count(args.params)
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, {device.platform}: "
        f"{getattr(device, 'device_kind', '')}"
    )
    print("| tree | variant | ms/step | x plain |")
    print("|---|---|---:|---:|")
    for kind in args.trees:
        shapes = step_bench.tree_shapes(kind, total)
        leaves = step_bench.numpy_tree(shapes, seed=0)
        grads = step_bench.as_jax(step_bench.numpy_tree(shapes, seed=1))
        quiet = [lambda r: None]
        variants = {
            "plain": jr.adam(1e-3),
            "log_step every=100": jr.log_step(jr.adam(1e-3), every=100, sinks=quiet),
            "log_step every=1": jr.log_step(jr.adam(1e-3), every=1, sinks=quiet),
            # The decomposition: the gated callback alone, then the statistics
            # that do not read the updates.
            "every=100, no statistics": jr.log_step(
                jr.adam(1e-3), every=100, stats=(), sinks=quiet
            ),
            "every=100, no update statistics": jr.log_step(
                jr.adam(1e-3), every=100, stats=_NO_UPDATE_STATS, sinks=quiet
            ),
            "every=1, no update statistics": jr.log_step(
                jr.adam(1e-3), every=1, stats=_NO_UPDATE_STATS, sinks=quiet
            ),
        }
        runs = {}
        for name, tx in variants.items():
            params = step_bench.as_jax(leaves)
            runs[name] = [compiled(tx, params, grads), params, tx.init(params), []]
        for r in range(args.rounds + 1):
            names = list(runs)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                run = runs[name]
                start = time.perf_counter()
                for _ in range(100):
                    run[1], run[2] = run[0](run[1], run[2], grads)
                jax.block_until_ready(run[1])
                jax.effects_barrier()
                if r:  # the first round warms up
                    run[3].append((time.perf_counter() - start) / 100 * 1e3)
                time.sleep(0.02)
        base = runs["plain"][3]
        tree = f"{sum(x.size for x in leaves) / 1e6:.3g}M x{len(leaves)}"
        for name, run in runs.items():
            ratio = statistics.median(a / b for a, b in zip(run[3], base, strict=True))
            print(
                f"| {tree} | {name} | {statistics.median(run[3]):.2f} | {ratio:.2f} |"
            )
        for tx in variants.values():
            if isinstance(tx, jr.wrappers.LoggedTransformation):
                tx.close()
    dispatch_cost(args.arrays, args.rounds)


if __name__ == "__main__":
    main()
