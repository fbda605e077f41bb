"""What log_step costs: the logged Adam step against the plain one.

The jitted, donated step (``update`` + ``optax.apply_updates``) of
``jaxopt_rules.adam`` on the ~200-leaf transformer tree of ``step.py`` (10M
params by default) and on one leaf of the same size, plain and wrapped in
``jaxopt_rules.log_step`` with the global statistics, firing every 100 steps
and every step (the sink is a no-op callable, so only the mechanism is
measured); then, to split the cost, with no statistics (the gated callback
alone) and without the statistics of the updates. Each round is
exactly 100 steps, so the ``every=100`` variants fire once per round; all
variants run in the same interleaved rounds after one warm-up round
(``_timing.py``). Prints the median ms/step and the median per-round ratio to
the plain step.

A second table measures what any host callback costs at dispatch, whatever
log_step does: a jitted ``x + 1`` over n small arrays with and without a
``lax.cond``-gated ``jax.debug.callback`` that never fires.

Usage::

    python -m benchmarks.logging_overhead            # 10M params
    python -m benchmarks.logging_overhead --params 1M --rounds 3
"""

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxopt_rules as jr
from benchmarks import _table, step as step_bench
from benchmarks._timing import Timed, donated_loop, measure, median_ms, paired_ratio


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
        _table.markdown_header(
            [
                "arrays in + out",
                "plain us/call",
                "with a gated callback",
                "extra us/array",
            ],
            "rrrr",
        )
    )
    for n in counts:
        timed = []
        for fn in (plain, gated):
            step = jax.jit(fn, donate_argnums=(0,))
            box = list(step([jnp.ones(8) for _ in range(n)], jnp.int32(1)))

            def run(step: Any = step, box: list[Any] = box) -> None:
                box[0], box[1] = step(box[0], box[1])

            def sync(box: list[Any] = box) -> None:
                jax.block_until_ready(box[0])

            timed.append(Timed(fn.__name__, run, sync, steps=200))
        measure(timed, rounds, warmup_rounds=1)
        us = [median_ms(t) * 1e3 for t in timed]
        extra = (us[1] - us[0]) / (2 * n + 2)
        print(
            _table.markdown_row(
                [str(2 * n + 2), f"{us[0]:.0f}", f"{us[1]:.0f}", f"{extra:.1f}"]
            )
        )


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
    print(_table.markdown_header(["tree", "variant", "ms/step", "x plain"], "llrr"))
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
        timed = []
        for name, tx in variants.items():
            params = step_bench.as_jax(leaves)
            run, sync, _ = donated_loop(
                compiled(tx, params, grads), params, tx.init(params), grads
            )

            def synced(sync: Any = sync) -> None:
                sync()
                jax.effects_barrier()  # the callbacks of the round have run

            timed.append(Timed(name, run, synced, steps=100))
        measure(timed, args.rounds, warmup_rounds=1)
        tree = f"{sum(x.size for x in leaves) / 1e6:.3g}M x{len(leaves)}"
        for t in timed:
            ratio = paired_ratio(t, timed[0])
            print(
                _table.markdown_row(
                    [tree, t.label, f"{median_ms(t):.2f}", f"{ratio:.2f}"]
                )
            )
        for tx in variants.values():
            if isinstance(tx, jr.wrappers.LoggedTransformation):
                tx.close()
    dispatch_cost(args.arrays, args.rounds)


if __name__ == "__main__":
    main()
