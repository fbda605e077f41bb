"""Low-memory optimizer state: bytes, quality and step time, side by side.

Three tables, each for Adam, AdamW and Lion with their state in float32,
bfloat16 (per-slot dtypes, stochastic rounding), 8-bit and 4-bit
(``jaxopt_rules.quantized_state``):

* ``memory``: optimizer-state bytes per parameter (``jaxopt_rules.tree_bytes``)
  on a 10M-parameter transformer-shaped tree (196 leaves), the digits MLP and
  the character-level language model of ``convergence.py``;
* ``quality``: the final loss of those two tasks (same hyperparameters and
  seed as float32), and its relative difference to float32's;
* ``speed``: the jitted, donated step (``update`` + ``apply_updates``) on one
  leaf and on the 196-leaf tree, all candidates in the same interleaved rounds
  (``_timing.py``): median ms and median per-round ratio to float32.

Usage::

    python -m benchmarks.quantized_state             # all three, ~15 min on CPU
    python -m benchmarks.quantized_state --tables memory quality
    python -m benchmarks.quantized_state --tables speed --params 100M   # a GPU
"""

import argparse
import inspect
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxopt_rules as jr
from benchmarks import _table, convergence, step as step_bench
from benchmarks._timing import calibrate, measure, median_ms, paired_ratio


RULES = ("adam", "adamw", "lion")
FORMATS = ("float32", "bfloat16", "8-bit", "4-bit")
QUALITY_TARGETS = {"8-bit": 0.02, "4-bit": 0.05}
"""Allowed relative increase of the final loss over float32's (the issue's)."""


def with_format(make: "_Partial", fmt: str) -> optax.GradientTransformation:
    """``make()`` with its state stored in ``fmt``."""
    if fmt == "float32":
        return make()
    if fmt == "bfloat16":
        # Every slot of these rules in bfloat16, rounded stochastically.
        parameters = inspect.signature(make.func).parameters
        dtypes = {a: jnp.bfloat16 for a in ("mu_dtype", "nu_dtype") if a in parameters}
        return make(**dtypes, stochastic_rounding=True)
    bits = 8 if fmt == "8-bit" else 4
    return jr.quantized_state(make(), bits=bits)


class _Partial:
    """``factory`` with some arguments bound (``functools.partial`` with a name)."""

    def __init__(self, func: Callable[..., Any], **kwargs: Any) -> None:
        self.func = func
        self.kwargs = kwargs

    def __call__(self, **more: Any) -> optax.GradientTransformation:
        return self.func(**self.kwargs, **more)


def rule_maker(rule: str, task: str) -> _Partial:
    """The registered rule with ``convergence.py``'s rate for ``task``."""
    spec = next(s for s in jr.REGISTRY if s.name == rule)
    rates = convergence.LEARNING_RATES.get(task, {"default": 1e-3})
    lr = rates.get(rule, rates["default"])
    return _Partial(spec.factory, learning_rate=lr)


# ---------------------------------------------------------------------------
# Memory


def memory_table() -> None:
    """State bytes per parameter, from ``jax.eval_shape`` (nothing allocated)."""
    shapes = step_bench.tree_shapes("200", 10_000_000)
    trees: dict[str, Any] = {
        f"transformer {step_bench._size(shapes) / 1e6:.1f}M x{len(shapes)}": {
            f"p{i}": jax.ShapeDtypeStruct(s, jnp.float32) for i, s in enumerate(shapes)
        },
        "digits MLP": jax.eval_shape(convergence.digits_task().init, jax.random.key(0)),
        "charlm": jax.eval_shape(convergence.charlm_task().init, jax.random.key(0)),
    }
    print("\n### State bytes per parameter\n")
    columns = ["tree", "params", "rule", *FORMATS]
    print(_table.markdown_header(columns, "lrl" + "r" * len(FORMATS)))
    for name, params in trees.items():
        n = sum(x.size for x in jax.tree.leaves(params))
        for rule in RULES:
            cells = []
            for fmt in FORMATS:
                tx = with_format(rule_maker(rule, "digits"), fmt)
                state = jax.eval_shape(tx.init, params)
                cells.append(f"{jr.tree_bytes(state) / n:.3f}")
            print(_table.markdown_row([name, f"{n:,}", rule, *cells]))


# ---------------------------------------------------------------------------
# Quality


def quality_table(tasks: list[str], seed: int) -> None:
    """Final loss per task, rule and format, relative to float32."""
    makers = {"digits": convergence.digits_task, "charlm": convergence.charlm_task}
    print("\n### Final loss (same hyperparameters and seed)\n")
    columns = [
        "task",
        "rule",
        *FORMATS,
        "8-bit vs f32",
        "4-bit vs f32",
        "within target",
    ]
    print(_table.markdown_header(columns, "ll" + "r" * (len(FORMATS) + 2) + "l"))
    for task_name in tasks:
        task = makers[task_name]()
        for rule in RULES:
            finals: dict[str, float] = {}
            for fmt in FORMATS:
                tx = with_format(rule_maker(rule, task_name), fmt)
                finals[fmt] = convergence.train(task, tx, fmt, seed=seed).final
            rel = {f: finals[f] / finals["float32"] - 1 for f in QUALITY_TARGETS}
            ok = all(rel[f] <= QUALITY_TARGETS[f] for f in QUALITY_TARGETS)
            cells = [f"{finals[f]:.4f}" for f in FORMATS]
            rels = [f"{rel['8-bit']:+.2%}", f"{rel['4-bit']:+.2%}"]
            verdict = "yes" if ok else "**no**"
            print(
                _table.markdown_row([task_name, rule, *cells, *rels, verdict]),
                flush=True,
            )


# ---------------------------------------------------------------------------
# Speed


def speed_table(total: int, trees: list[str], rounds: int) -> None:
    """Step time per format, interleaved rounds, ratios to float32."""
    print(f"\n### Step time ({jax.devices()[0].device_kind})\n")
    columns = ["tree", "rule", *FORMATS, *(f"{f} / f32" for f in FORMATS[1:])]
    print(_table.markdown_header(columns, "ll" + "r" * (2 * len(FORMATS) - 1)))
    for kind in trees:
        shapes = step_bench.tree_shapes(kind, total)
        leaves = step_bench.numpy_tree(shapes, 0)
        grads = step_bench.as_jax(step_bench.numpy_tree(shapes, 1))
        n = step_bench._size(shapes)
        for rule in RULES:
            candidates = [
                step_bench.jax_candidate(
                    fmt,
                    rule,
                    with_format(rule_maker(rule, "digits"), fmt),
                    leaves,
                    grads,
                )
                for fmt in FORMATS
            ]
            for c in candidates:
                calibrate(c, 0.3)
            measure(candidates, rounds, pause=0.02)
            ms = [f"{median_ms(c):.2f}" for c in candidates]
            ratios = [paired_ratio(c, candidates[0]) for c in candidates[1:]]
            tree = f"{n / 1e6:.1f}M x{len(shapes)}"
            cells = [*ms, *(f"{r:.2f}x" for r in ratios if r is not None)]
            print(_table.markdown_row([tree, rule, *cells]), flush=True)
            del candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables",
        nargs="+",
        default=["memory", "quality", "speed"],
        choices=["memory", "quality", "speed"],
    )
    parser.add_argument("--tasks", nargs="+", default=["digits", "charlm"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="10M", help="speed: total parameters")
    parser.add_argument("--trees", nargs="+", default=["1", "200"])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(
        f"jaxopt_rules {jr.__version__}, jax {jax.__version__}, optax "
        f"{optax.__version__}, {jax.devices()[0].platform} "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    if "memory" in args.tables:
        memory_table()
    if "quality" in args.tables:
        quality_table(args.tasks, args.seed)
    if "speed" in args.tables:
        speed_table(step_bench.parse_count(args.params), args.trees, args.rounds)


if __name__ == "__main__":
    main()
