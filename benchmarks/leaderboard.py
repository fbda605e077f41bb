"""Which rule should I use? Every catalog rule, tuned and rerun with seeds.

For each task and each rule: a learning-rate sweep (five rates, a factor of
10 either side of the rule's usual rate, on a log grid, extended two rates
at a time past an end that holds the best) run as one compiled program
(``jr.sweep``: the rates are injected hyperparameters, the runs are
``jax.vmap``-ed), the best rate chosen by final loss; for a rule with a
``weight_decay``, a sweep of weight decays at that rate (``WEIGHT_DECAYS``
besides the rule's own, which the rate sweep ran with), the best chosen the
same way; then three seeds at the best setting: seed 0's run is the
sweeps' own (every run of a sweep starts from seed 0), seeds 1 and 2 run
as one more program. Reported per rule:
steps to the task's target (the first evaluation at or below it; mean and
standard deviation over the seeds that reach it), final loss (mean and
standard deviation over seeds), the wall time of one run (the seeds
program's, per run), and optimizer state bytes per parameter. A
table per task, sorted by final loss, with each rule's difference from
tuned AdamW; plots of the best rules' loss curves and of steps to target
with error bars go to ``docs/plots/`` (the documentation shows them).

The tasks are those of ``benchmarks/convergence.py`` that need no download:
an MLP on scikit-learn's digits (train cross-entropy, target 0.05), a small
CNN on the same digits as 8x8 images (held-out cross-entropy after 300
steps, target 0.15) and a byte-level transformer on the standard library's
source (held-out nats/byte, target 2.2; 200 steps here, ``STEPS``). Rules
whose ``update`` needs more
than the gradient (the loss, a line search, per-example gradients) are
listed and skipped.

Usage::

    python -m benchmarks.leaderboard               # every rule, every task
    python -m benchmarks.leaderboard --quick       # 3 rules, digits, 200 steps
    python -m benchmarks.leaderboard --rules adamw lion --tasks digits
"""

import argparse
import concurrent.futures
import dataclasses
import functools
import importlib
import inspect
import math
import multiprocessing
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any


# XLA:CPU's concurrency-optimized scheduler stops these programs (a scan of
# vmapped runs whose step calls LAPACK: PSGD Kron's triangular solves,
# SOAP's and Shampoo's eigendecompositions) with every thread waiting and
# none busy (jaxlib 0.10.2); with the default scheduler they run. Set before
# jax is imported, added to the caller's flags.
if __name__ == "__main__" and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
    )

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr
from benchmarks import _table, convergence


PLOTS = pathlib.Path(__file__).parent.parent / "docs" / "plots"
"""The leaderboard's plots live in the documentation site, which shows them."""
GRID = (0.1, 10**-0.5, 1.0, 10**0.5, 10.0)
"""Multiples of a rule's usual learning rate that the sweep tries."""
EXTENSION = 2
"""Rates (half a decade apart) the grid is extended by past an end that holds
the best rate."""
EXTENSIONS = 5
"""Times the grid is extended at most (5 decades past either end)."""
WEIGHT_DECAYS = (0.0, 0.1)
"""Weight decays tried at the best rate (besides the rule's own, with which
the rates were swept), for rules that have a ``weight_decay``."""
SEEDS = (0, 1, 2)
"""Seeds of the runs at the best rate; the sweep's runs all start from the first."""
STEPS = {"charlm": 200}
"""Steps per task where the leaderboard runs fewer than the task's own: the
transformer's 1000 steps for the whole catalog would take hours on 2 cores."""
QUICK_RULES = ("adamw", "lion", "laprop")


@dataclasses.dataclass
class Entry:
    """One rule on one task: its sweep and its seeded runs at the best rate."""

    rule: str
    task: str
    rates: list[float]
    sweep_final: list[float]  # final loss per rate (NaN: diverged)
    best_rate: float
    eval_steps: list[int]
    curves: np.ndarray  # (seeds, evaluations) losses at the best rate
    target: float
    wall_s: float  # one run at the best rate, after compilation
    state_bytes_per_param: float
    work_s: float = math.nan  # the whole evaluation: sweeps, seeds, compilations
    # At the best rate, per weight decay tried (the rule's own first), the
    # final loss of seed 0; empty for a rule without weight decay.
    weight_decays: list[float] = dataclasses.field(default_factory=list)
    weight_decay_final: list[float] = dataclasses.field(default_factory=list)
    best_weight_decay: float | None = None

    @property
    def finals(self) -> list[float]:
        return [float(c[-1]) for c in self.curves]

    @property
    def steps_to_target(self) -> list[int]:
        """Per seed that reaches the target, the first evaluated step that does."""
        reached = []
        for curve in self.curves:
            hits = [
                s
                for s, x in zip(self.eval_steps, curve, strict=True)
                if x <= self.target
            ]
            if hits:
                reached.append(hits[0])
        return reached


SAMPLED = ("logits_fn",)
"""The update arguments the leaderboard passes: the model's logits on the
step's batch, as a function of one run's parameters (Sophia-G's estimate)."""


def eligible(spec: jr.RuleSpec) -> bool:
    """Rules trained from the gradient (and the logits), with a ``learning_rate``."""
    if set(spec.update_args) - set(SAMPLED):
        return False
    if jr.testing.takes_per_example(spec.factory):
        return False
    return "learning_rate" in inspect.signature(spec.factory).parameters


def usual_rate(rule: str, task: str) -> float:
    rates = convergence.LEARNING_RATES.get(task, {"default": 1e-3})
    return float(rates.get(rule, rates["default"]))


def _stacked_batches(task: convergence.Task, steps: int) -> Any:
    batches = [task.batch(i) for i in range(steps)]
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _program(
    task: convergence.Task,
    tx: optax.GradientTransformation,
    every: int,
    update_args: Sequence[str] = (),
):
    """A jitted training run of N vmapped runs: losses at every evaluation."""
    grad = jax.vmap(jax.grad(task.loss), in_axes=(0, None))
    evaluate = jax.vmap(task.eval_loss)
    logits = task.logits
    if "logits_fn" in update_args and logits is None:
        raise ValueError(f"{task.name} has no logits for a rule that samples labels")

    def body(carry: Any, batch: Any) -> tuple[Any, None]:
        params, state = carry
        extra = {}
        if "logits_fn" in update_args and logits is not None:
            extra["logits_fn"] = lambda p: logits(p, batch)  # one run's params
        updates, state = tx.update(grad(params, batch), state, params, **extra)
        return (optax.apply_updates(params, updates), state), None

    def chunk(carry: Any, batches: Any) -> tuple[Any, jax.Array]:
        carry, _ = jax.lax.scan(body, carry, batches)
        return carry, evaluate(carry[0])

    @jax.jit
    def run(params: Any, state: Any, batches: Any) -> jax.Array:
        first = evaluate(params)
        chunks = jax.tree.map(lambda b: b.reshape(-1, every, *b.shape[1:]), batches)
        _, losses = jax.lax.scan(chunk, (params, state), chunks)
        return jnp.concatenate([first[None], losses])  # (evaluations, runs)

    return run


def _runs(task, spec, swept, seeds, batches, every) -> tuple[np.ndarray, float]:
    """Losses (runs, evaluations) of one run per value of ``swept`` and seed.

    ``swept``: hyperparameter name -> one value per run (``jr.sweep``); the
    rule's other arguments are the task's (``convergence.RULE_KWARGS``).
    Also the wall time of the runs.
    """
    fixed = dict(convergence.RULE_KWARGS.get(spec.name, {}))
    fixed = {k: v for k, v in fixed.items() if k not in swept}
    tx = jr.sweep(spec.factory, {k: list(v) for k, v in swept.items()}, **fixed)
    inits = [task.init(jax.random.key(s)) for s in seeds]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
    state = tx.init(params)
    run = _program(task, tx, every, spec.update_args)
    compiled = run.lower(params, state, batches).compile()
    start = time.perf_counter()
    losses = np.asarray(jax.block_until_ready(compiled(params, state, batches)))
    return losses.T, time.perf_counter() - start


def own_weight_decay(spec: jr.RuleSpec, task: str) -> float | None:
    """The weight decay a rule's rates are swept with (``None``: it has none).

    The task's setting (``convergence.RULE_KWARGS``), else the factory's
    default; a default of ``None`` (no decay) counts as 0.
    """
    parameters = inspect.signature(spec.factory).parameters
    if "weight_decay" not in parameters:
        return None
    fixed = convergence.RULE_KWARGS.get(spec.name, {})
    value = fixed.get("weight_decay", parameters["weight_decay"].default)
    return 0.0 if value is None else float(value)


def _state_bytes(task: convergence.Task, spec: jr.RuleSpec, rate: float) -> float:
    params = task.init(jax.random.key(0))
    fixed = dict(convergence.RULE_KWARGS.get(spec.name, {}))
    state = jax.eval_shape(spec.factory(learning_rate=rate, **fixed).init, params)
    n = sum(x.size for x in jax.tree.leaves(params))
    return jr.tree_bytes(state) / n


def _final(curve: np.ndarray) -> float:
    """A run's last loss (NaN for a run that diverged, to infinity too)."""
    return float(curve[-1]) if math.isfinite(curve[-1]) else math.nan


def _best(finals: Sequence[float]) -> int:
    """The index of the lowest final loss (a diverged run's NaN loses)."""
    return int(np.argmin([f if math.isfinite(f) else math.inf for f in finals]))


def evaluate_rule(task, spec, batches, steps, every) -> Entry:
    """The sweeps, the choice of rate and weight decay, and the seeded runs."""
    base = usual_rate(spec.name, task.name)
    rates: list[float] = []
    finals: list[float] = []
    first_seed: dict[float, np.ndarray] = {}  # the sweep's curves, all seed 0
    grid = [base * m for m in GRID]
    for _ in range(1 + EXTENSIONS):
        swept = {"learning_rate": grid}
        sweep, _ = _runs(task, spec, swept, [SEEDS[0]] * len(grid), batches, every)
        first_seed.update(zip(grid, sweep, strict=True))
        rates += grid
        finals += [_final(curve) for curve in sweep]
        order = sorted(range(len(rates)), key=lambda i: rates[i])
        rates, finals = [rates[i] for i in order], [finals[i] for i in order]
        at = _best(finals)
        if 0 < at < len(rates) - 1 or not math.isfinite(finals[at]):
            break
        # The best rate is at an end of the grid: try rates beyond it.
        factor = 10**0.5 if at else 10**-0.5
        grid = [rates[at] * factor ** (k + 1) for k in range(EXTENSION)]
    best = rates[_best(finals)]
    first = first_seed[best]
    # The weight decays at the best rate: the rule's own (the rate sweep's
    # run), then the others, seed 0 each.
    own = own_weight_decay(spec, task.name)
    decays: list[float] = []
    decay_finals: list[float] = []
    best_decay = own
    if own is not None:
        others = [w for w in WEIGHT_DECAYS if w != own]
        swept = {"learning_rate": [best] * len(others), "weight_decay": others}
        runs, _ = _runs(task, spec, swept, [SEEDS[0]] * len(others), batches, every)
        decays = [own, *others]
        curves = [first, *runs]
        decay_finals = [_final(curve) for curve in curves]
        at = _best(decay_finals)
        best_decay, first = decays[at], curves[at]
    # Seed 0 at the best setting is a sweep's run; the other seeds run now.
    n = len(SEEDS[1:])
    swept = {"learning_rate": [best] * n}
    if best_decay != own:
        swept["weight_decay"] = [best_decay] * n
    others_runs, wall = _runs(task, spec, swept, SEEDS[1:], batches, every)
    return Entry(
        rule=spec.name,
        task=task.name,
        rates=rates,
        sweep_final=finals,
        best_rate=best,
        eval_steps=list(range(0, steps + 1, every)),
        curves=np.concatenate([first[None], others_runs]),
        target=task.target,
        wall_s=wall / n,
        state_bytes_per_param=_state_bytes(task, spec, best),
        weight_decays=decays,
        weight_decay_final=decay_finals,
        best_weight_decay=best_decay,
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), 0.0
    return statistics.fmean(values), statistics.stdev(values)


COLUMNS = (
    "rule",
    "best lr",
    "wd",
    "final loss",
    "vs adamw",
    "steps to target",
    "reached",
    "x adamw steps",
    "s/run",
    "state B/param",
)


def rows(entries: list[Entry]) -> list[tuple[str, ...]]:
    """One row per rule, sorted by mean final loss; differences from AdamW's."""
    adamw = next((e for e in entries if e.rule == "adamw"), None)
    ref_final = _mean_std(adamw.finals)[0] if adamw else math.nan
    ref_steps = _mean_std(adamw.steps_to_target)[0] if adamw else math.nan
    out = []
    for e in sorted(entries, key=lambda e: _mean_std(e.finals)[0]):
        final, final_sd = _mean_std(e.finals)
        steps, steps_sd = _mean_std(e.steps_to_target)
        out.append(
            (
                e.rule,
                f"{e.best_rate:.3g}",
                "-" if e.best_weight_decay is None else f"{e.best_weight_decay:g}",
                f"{final:.4f} ± {final_sd:.4f}",
                f"{final - ref_final:+.4f}",
                "-" if math.isnan(steps) else f"{steps:.0f} ± {steps_sd:.0f}",
                f"{len(e.steps_to_target)}/{len(e.curves)}",
                "-" if math.isnan(steps) else f"{steps / ref_steps:.2f}",
                f"{e.wall_s:.2f}",
                f"{e.state_bytes_per_param:.2f}",
            )
        )
    return out


def save_plots(entries: list[Entry], top: int = 6) -> list[pathlib.Path]:
    """Loss curves of the best rules (and AdamW), steps to target with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    task = entries[0].task
    ranked = sorted(entries, key=lambda e: _mean_std(e.finals)[0])
    shown = ranked[:top] + [e for e in ranked[top:] if e.rule == "adamw"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in shown:
        mean = e.curves.mean(axis=0)
        ax.plot(e.eval_steps, mean, label=f"{e.rule} (lr {e.best_rate:.3g})")
        ax.fill_between(e.eval_steps, e.curves.min(0), e.curves.max(0), alpha=0.2)
    ax.axhline(entries[0].target, color="gray", linestyle=":", label="target")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=f"{task}: best rules")
    ax.legend(fontsize=7)
    curves = PLOTS / f"leaderboard_{task}_curves.png"
    fig.savefig(curves, dpi=120, bbox_inches="tight")
    plt.close(fig)
    reached = [e for e in ranked if e.steps_to_target]
    if not reached:  # (no bars to draw)
        return [curves]
    reached.sort(key=lambda e: _mean_std(e.steps_to_target)[0])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(reached) + 1.5))
    means = [_mean_std(e.steps_to_target) for e in reached]
    ax.barh(
        [f"{e.rule} ({len(e.steps_to_target)}/{len(e.curves)})" for e in reached],
        [m for m, _ in means],
        xerr=[s for _, s in means],
    )
    ax.invert_yaxis()
    ax.set(xlabel=f"steps to loss {entries[0].target}", title=f"{task}")
    bars = PLOTS / f"leaderboard_{task}_steps.png"
    fig.savefig(bars, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [curves, bars]


@functools.cache
def _prepared(task_name: str, steps: int | None) -> tuple[Any, Any, int, int]:
    """A task, its stacked batches, its step count and evaluation interval."""
    task = convergence.TASKS[task_name]()
    steps = steps or STEPS.get(task_name, task.steps)
    every = task.eval_every if steps % task.eval_every == 0 else steps
    return task, _stacked_batches(task, steps), steps, every


def _evaluate(task_name: str, rule: str, steps: int | None) -> Entry:
    """One rule on one task, by name (what a worker process runs)."""
    task, batches, steps, every = _prepared(task_name, steps)
    spec = next(s for s in jr.REGISTRY if s.name == rule)
    start = time.perf_counter()
    entry = evaluate_rule(task, spec, batches, steps, every)
    entry.work_s = time.perf_counter() - start
    return entry


# Eigen's work on one thread per worker process: on 2 cores two such
# processes get through the transformer's runs 1.17x faster than one process
# with multi-threaded Eigen, and one compiles while the other runs.
_WORKER_FLAGS = " --xla_cpu_multi_thread_eigen=false"


def _worker_setup() -> None:
    """A worker's XLA flags, set before its first computation starts XLA."""
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + _WORKER_FLAGS


def _run_all(pairs: list[tuple[str, str]], steps: int | None, jobs: int):
    """Yield each (task, rule)'s entry from ``jobs`` processes, as they finish."""
    if jobs <= 1:
        for task_name, rule in pairs:
            yield _evaluate(task_name, rule, steps)
        return
    # By the package's name, which the workers import (not ``__main__``).
    module = importlib.import_module("benchmarks.leaderboard")
    context = multiprocessing.get_context("spawn")  # (a fork of jax can hang)
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=module._worker_setup
    ) as pool:
        evaluate = module._evaluate
        futures = [pool.submit(evaluate, t, r, steps) for t, r in pairs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def main(argv: Sequence[str] | None = None) -> list[Entry]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=["digits", "conv", "charlm"])
    parser.add_argument("--rules", nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes (one per core)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.steps = ["digits"], args.steps or 200
        args.rules = args.rules or list(QUICK_RULES)
    specs = [s for s in jr.REGISTRY if args.rules is None or s.name in args.rules]
    skipped = [s.name for s in specs if not eligible(s)]
    specs = [s for s in specs if eligible(s)]
    if skipped:
        print(
            "skipped (update needs more than the gradient and the logits): "
            + ", ".join(skipped)
        )
    start = time.perf_counter()
    pairs = [(task, spec.name) for task in args.tasks for spec in specs]
    found: dict[str, list[Entry]] = {task: [] for task in args.tasks}
    for entry in _run_all(pairs, args.steps, args.jobs):
        found[entry.task].append(entry)
        print(
            f"  {entry.task}/{entry.rule}: lr {entry.best_rate:.3g}, "
            f"wd {entry.best_weight_decay}, "
            f"final {_mean_std(entry.finals)[0]:.4f} ({entry.work_s:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    entries: list[Entry] = []
    for name, task_entries in found.items():
        if not task_entries:
            continue
        steps = task_entries[0].eval_steps[-1]
        work = sum(e.work_s for e in task_entries)
        print(f"\n== {name} ({steps} steps, {work:.0f} s of work)")
        _table.print_table(
            COLUMNS, rows(task_entries), "lrrrrrrrrr", markdown=args.markdown
        )
        if not args.no_plots:
            for path in save_plots(task_entries):
                print(f"saved {path}")
        entries += task_entries
    print(
        f"\n{len(pairs)} runs of a rule on a task in "
        f"{time.perf_counter() - start:.0f} s ({args.jobs} process(es))"
    )
    return entries


if __name__ == "__main__":
    main()
