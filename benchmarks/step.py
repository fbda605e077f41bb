"""Step time, bandwidth, compile time and memory of every registered rule.

For each tree (one big leaf, ~200 transformer-shaped leaves, 2000 small
leaves; same total size) and each registered rule, the jitted optimizer step
``update`` + ``optax.apply_updates`` with params and state donated, next to:

* its optax counterpart (the registry's reference);
* ``torch.optim``'s for-loop, foreach and fused versions where torch has the
  algorithm (``--no-torch`` to skip; on a GPU machine torch runs on CUDA);
* a bandwidth reference: a donated read-modify-write pass ``a = a + s * b``
  over the same number of bytes the rule nominally moves;
* the rule with bfloat16 state, for rules that take storage-dtype arguments;
* with ``--flat``, the rule wrapped in ``jaxopt_rules.flat_leaves`` (one flat
  buffer per dtype instead of one per leaf).

All candidates of one tree run in the same interleaved rounds (a new random
order each round, garbage collection paused, 20 ms pauses so one framework's
spinning worker threads do not starve the next), so every ratio is a median of
per-round paired ratios.

Columns: ms per step (median over rounds); effective GB/s on the nominal byte
count (read g, p and the state, write p and the state: 28 B/param for float32
Adam); ``% ref``: the read-modify-write reference's time over this one's (the
fraction of the bandwidth reached on this machine, in this run); ratios to
optax and to torch's fused step; compile time (trace + lower + compile);
state bytes per parameter; temporary bytes per parameter from the compiled
step's ``memory_analysis()`` (a parameter-sized float32 temporary shows as 4).

Usage::

    python -m benchmarks.step                     # 10M params, all rules
    python -m benchmarks.step --quick             # 1M params, 3 rounds
    python -m benchmarks.step --rules adam lion --trees 1 200 --rounds 7
    python -m benchmarks.step --rules adam --trees 1 --params 50M   # roofline

``--markdown`` prints the tables as Markdown (for benchmarks/README.md).
"""

import argparse
import bisect
import dataclasses
import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr
from benchmarks import _table
from benchmarks._timing import (
    Timed,
    calibrate,
    donated_loop,
    measure,
    median_ms,
    paired_ratio,
)
from jaxopt_rules import testing


# ---------------------------------------------------------------------------
# Trees


def transformer_shapes(d: int, layers: int = 12) -> list[tuple[int, ...]]:
    """GPT-like leaves: layers of 16 leaves, embeddings, a final norm (196 for 12)."""
    layer = [(d, d)] * 4 + [(d,)] * 4  # q, k, v, o and their biases
    layer += [(d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # MLP
    layer += [(d,)] * 4  # two layer norms
    return [*(layer * layers), (2048, d), (512, d), (d,), (d,)]


def many_small_shapes(w: int) -> list[tuple[int, ...]]:
    """2000 leaves: 500 blocks of a (w, w) matrix, a bias, another matrix and bias."""
    return [(w, w), (w,), (w, w), (w,)] * 500


def _size(shapes: list[tuple[int, ...]]) -> int:
    return sum(int(np.prod(s)) for s in shapes)


def _nearest(
    sizes: range, shapes: Callable[[int], list[tuple[int, ...]]], total: int
) -> list[tuple[int, ...]]:
    """``shapes(k)`` for the ``k`` in ``sizes`` whose size is nearest ``total``.

    The size grows with ``k``, so a bisection finds it.
    """
    i = bisect.bisect_left(sizes, total, key=lambda k: _size(shapes(k)))
    near = [sizes[j] for j in (i - 1, i) if 0 <= j < len(sizes)]
    return shapes(min(near, key=lambda k: abs(_size(shapes(k)) - total)))


def tree_shapes(kind: str, total: int) -> list[tuple[int, ...]]:
    """The leaf shapes of tree ``kind`` with ~``total`` params.

    ``'1'``: one leaf; ``'200'``: a 12-layer transformer (196 leaves);
    ``'2000'``: 2000 small leaves; ``'20'``: a one-layer transformer (20
    leaves), a quick tree for trying the script.
    """
    if kind == "1":
        return [(total,)]
    if kind in ("20", "200"):
        layers = 1 if kind == "20" else 12
        return _nearest(
            range(8, 4096, 8), lambda d: transformer_shapes(d, layers), total
        )
    if kind == "2000":
        return _nearest(range(2, 2000), many_small_shapes, total)
    raise ValueError(f"unknown tree {kind!r}; choose from 1, 20, 200, 2000")


def numpy_tree(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """Fixed ``0.01 * N(0, 1)`` float32 leaves (strongly typed)."""
    rng = np.random.default_rng(seed)
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in shapes]


def as_jax(leaves: list[np.ndarray]) -> dict[str, jax.Array]:
    """A dict pytree of device arrays (one fresh copy)."""
    return {f"p{i:04d}": jnp.array(x) for i, x in enumerate(leaves)}


# ---------------------------------------------------------------------------
# Candidates

# Representative hyperparameters (the optimizer's cost, not its tuning).
BENCH_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "sgd": {"learning_rate": 1e-3, "momentum": 0.9},
    "adam": {"learning_rate": 1e-3},
    "adamw": {"learning_rate": 1e-3, "weight_decay": 1e-4},
    "rmsprop": {"learning_rate": 1e-3},
    "adagrad": {"learning_rate": 1e-2},
    "lion": {"learning_rate": 1e-4},
    "lamb": {"learning_rate": 1e-3},
    "normalized_sgd": {"learning_rate": 1e-2},
}

# torch.optim counterparts: class name and keyword arguments.
TORCH_COUNTERPARTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-4}),
    "rmsprop": ("RMSprop", {"lr": 1e-3}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
}
TORCH_MODES = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


@dataclasses.dataclass(kw_only=True)
class Candidate(Timed):
    """One implementation of one step, ready to run, with what it costs."""

    rule: str
    nominal_bytes: float  # per parameter
    compile_s: float | None = None
    state_bytes: float | None = None  # per parameter
    temp_bytes: float | None = None  # per parameter


def nominal_bytes(state_bytes_per_param: float, param_bytes: int = 4) -> float:
    """Bytes per parameter of a single pass: read g, p, state; write p, state."""
    return param_bytes + 2 * param_bytes + 2 * state_bytes_per_param


def jax_candidate(
    label: str,
    rule: str,
    tx: optax.GradientTransformation,
    leaves: list[np.ndarray],
    grads: dict[str, jax.Array],
    update_args: tuple[str, ...] = (),
) -> Candidate:
    """The donated, jitted step of an optax transform.

    A rule that reads the loss (``update_args=("value",)``) gets a constant
    loss value, an input of the program: the step's cost, not a training run.
    A rule that differentiates the loss (``"obj_fn"``, Sophia's Hessian
    estimate) gets the kit's example loss (a sum of elementwise terms), part
    of the program. A line search (``"value_fn"``, L-BFGS) gets that loss,
    its value at the parameters and the step's gradient as ``grad``.
    """
    params = as_jax(leaves)
    n = sum(x.size for x in leaves)
    unknown = set(update_args) - {"value", "grad", "value_fn", "obj_fn", "logits_fn"}
    if unknown:
        raise NotImplementedError(f"{rule}: the benchmark cannot pass {unknown}")
    line_search = "value_fn" in update_args
    extra: dict[str, Any] = {
        name: jnp.asarray(1.0, jnp.float32)
        for name in update_args
        if name == "value" and not line_search
    }
    extra |= testing.loss_functions(update_args, testing.example_loss)

    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        more: dict[str, Any] = {}
        if line_search:  # the loss at params, consistent with value_fn
            more["value"] = testing.example_loss(params)
        if "grad" in update_args:
            more["grad"] = grads
        updates, state = tx.update(grads, state, params, **extra, **more)
        return optax.apply_updates(params, updates), state

    start = time.perf_counter()
    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, jax.eval_shape(tx.init, params), grads)
        .compile()
    )
    compile_s = time.perf_counter() - start
    # A copy: optax.contrib.cocob's state holds the params themselves, which
    # a step donating both would donate twice.
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), tx.init(params))
    state_bytes = jr.tree_bytes(state) / n
    memory = compiled.memory_analysis()
    temp = memory.temp_size_in_bytes / n if memory is not None else float("nan")
    run, sync, _ = donated_loop(compiled, params, state, grads)
    return Candidate(
        label=label,
        run=run,
        sync=sync,
        rule=rule,
        nominal_bytes=nominal_bytes(state_bytes),
        compile_s=compile_s,
        state_bytes=state_bytes,
        temp_bytes=temp,
    )


def rmw_candidate(label: str, rule: str, n_params: int, nbytes: float) -> Candidate:
    """``a = a + s * b``, donated, on flat float32 arrays moving ``nbytes``/param."""
    size = max(int(n_params * nbytes / 12), 1)  # rmw moves 12 B per element
    a = jnp.zeros(size, jnp.float32)
    b = jnp.full(size, 1e-3, jnp.float32) + jnp.zeros(size, jnp.float32)
    fn = jax.jit(lambda a, b: a + jnp.float32(1e-6) * b, donate_argnums=0)
    box = [a]

    def run() -> None:
        box[0] = fn(box[0], b)

    def sync() -> None:
        jax.block_until_ready(box[0])

    return Candidate(label=label, run=run, sync=sync, rule=rule, nominal_bytes=nbytes)


def torch_candidates(
    rule: str, leaves: list[np.ndarray], grads: list[np.ndarray], nbytes: float
) -> list[Candidate]:
    """torch.optim's for-loop, foreach and fused steps, where they exist."""
    try:
        import torch
    except ImportError:
        return []
    if rule not in TORCH_COUNTERPARTS:
        return []
    cls_name, kwargs = TORCH_COUNTERPARTS[rule]
    cls = getattr(torch.optim, cls_name)
    device = (
        "cuda"
        if jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
        else "cpu"
    )
    out = []
    for mode, mode_kwargs in TORCH_MODES.items():
        params = [
            torch.nn.Parameter(torch.from_numpy(x.copy()).to(device)) for x in leaves
        ]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g).to(device)
        try:
            opt = cls(params, **kwargs, **mode_kwargs)
            opt.step()  # allocates the state; fails here if the mode is unsupported
        except (RuntimeError, ValueError, TypeError):
            continue
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        out.append(
            Candidate(
                label=f"torch {mode}",
                run=opt.step,
                sync=sync,
                rule=rule,
                nominal_bytes=nbytes,
            )
        )
    return out


# ---------------------------------------------------------------------------
# One tree


@dataclasses.dataclass
class Row:
    """One printed line."""

    tree: str
    rule: str
    label: str
    ms: float
    gbps: float
    frac_ref: float | None
    x_optax: float | None
    x_torch_fused: float | None
    compile_s: float | None
    state_bytes: float | None
    temp_bytes: float | None


def bench_tree(
    kind: str, total: int, rules: list[jr.RuleSpec], args: argparse.Namespace
) -> list[Row]:
    """Builds and times every candidate on one tree; returns its rows."""
    shapes = tree_shapes(kind, total)
    n = _size(shapes)
    tree_name = f"{n / 1e6:.3g}M x{len(shapes)}"
    print(f"\n== {tree_name}: building and compiling ...", flush=True)
    leaves = numpy_tree(shapes, seed=0)
    grad_leaves = numpy_tree(shapes, seed=1)
    groups: dict[str, dict[str, Candidate]] = {}
    for spec in rules:
        kwargs = BENCH_HYPERPARAMS.get(spec.name, {**spec.hyperparams, **spec.cases[0]})
        extra = spec.update_args
        group: dict[str, Candidate] = {}
        if testing.takes_per_example(spec.factory):
            # DP-SGD takes per-example gradients: a batch of two examples.
            grads = testing.example_batch(as_jax(grad_leaves))
        else:
            grads = as_jax(grad_leaves)
        ours = jax_candidate(
            "jaxopt_rules", spec.name, spec.factory(**kwargs), leaves, grads, extra
        )
        group["jaxopt_rules"] = ours
        if spec.reference_factory is not None:  # (a rule optax has)
            group["optax"] = jax_candidate(
                "optax",
                spec.name,
                spec.reference_factory(**kwargs),
                leaves,
                grads,
                extra,
            )
        dtype_args = [a for a in spec.static_args if a.endswith("_dtype")]
        if dtype_args and not args.no_bf16:
            bf16 = {a: jnp.bfloat16 for a in dtype_args}
            group["jaxopt_rules bf16 state"] = jax_candidate(
                "jaxopt_rules bf16 state",
                spec.name,
                spec.factory(**kwargs, **bf16),
                leaves,
                grads,
                extra,
            )
        if (
            args.flat
            and not spec.reads_whole_leaves
            and not testing.takes_per_example(spec.factory)
        ):
            group["jaxopt_rules flat"] = jax_candidate(
                "jaxopt_rules flat",
                spec.name,
                jr.flat_leaves(spec.factory(**kwargs)),
                leaves,
                grads,
                extra,
            )
        if not args.no_torch:
            for c in torch_candidates(
                spec.name, leaves, grad_leaves, ours.nominal_bytes
            ):
                group[c.label] = c
        group["rmw reference"] = rmw_candidate(
            "rmw reference", spec.name, n, ours.nominal_bytes
        )
        groups[spec.name] = group
        print(
            f"   {spec.name}: {', '.join(group)} (compile {ours.compile_s:.2f} s)",
            flush=True,
        )
    everything = [c for g in groups.values() for c in g.values()]
    for c in everything:
        calibrate(c, args.round_seconds)
    pause = 0.0 if jax.devices()[0].platform == "gpu" else 0.02
    measure(everything, args.rounds, pause=pause)
    rows = []
    for name, group in groups.items():
        ref = group["rmw reference"]
        for label, c in group.items():
            ms = median_ms(c)
            rows.append(
                Row(
                    tree=tree_name,
                    rule=name,
                    label=label,
                    ms=ms,
                    gbps=c.nominal_bytes * n / (ms * 1e-3) / 1e9,
                    frac_ref=None if c is ref else 1.0 / paired_ratio(c, ref),  # type: ignore[operator]
                    x_optax=paired_ratio(c, group["optax"])
                    if label != "optax" and "optax" in group
                    else None,
                    x_torch_fused=paired_ratio(c, group.get("torch fused"))
                    if label != "torch fused"
                    else None,
                    compile_s=c.compile_s,
                    state_bytes=c.state_bytes,
                    temp_bytes=c.temp_bytes,
                )
            )
    cross = {}
    if "adam" in groups and "lion" in groups:
        cross["lion / adam (jaxopt_rules)"] = paired_ratio(
            groups["lion"]["jaxopt_rules"], groups["adam"]["jaxopt_rules"]
        )
    for name, group in groups.items():
        if "jaxopt_rules bf16 state" in group:
            cross[f"{name}: bf16 state / float32 state"] = paired_ratio(
                group["jaxopt_rules bf16 state"], group["jaxopt_rules"]
            )
    for key, value in cross.items():
        rows.append(
            Row(
                tree_name,
                "(paired)",
                key,
                value or float("nan"),
                float("nan"),
                None,
                None,
                None,
                None,
                None,
                None,
            )
        )
    del groups, everything
    gc.collect()
    return rows


# ---------------------------------------------------------------------------
# Output


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None or x != x else format(x, spec)


COLUMNS = (
    "tree",
    "rule",
    "candidate",
    "ms",
    "GB/s",
    "% ref",
    "x optax",
    "x torch fused",
    "compile s",
    "state B/p",
    "temp B/p",
)


def row_cells(r: Row) -> list[str]:
    """Formatted cells of one row."""
    if r.rule == "(paired)":
        return [r.tree, r.rule, r.label, f"{r.ms:.2f}x", "", "", "", "", "", "", ""]
    return [
        r.tree,
        r.rule,
        r.label,
        f"{r.ms:.3g}" if r.ms < 1 else f"{r.ms:.2f}",
        _fmt(r.gbps, ".1f"),
        _fmt(None if r.frac_ref is None else 100 * r.frac_ref, ".0f"),
        _fmt(r.x_optax, ".2f"),
        _fmt(r.x_torch_fused, ".2f"),
        _fmt(r.compile_s, ".2f"),
        _fmt(r.state_bytes, ".2f"),
        _fmt(r.temp_bytes, ".2f"),
    ]


def print_table(rows: list[Row], markdown: bool) -> None:
    """Prints rows as aligned text or as a Markdown table."""
    align = "lll" + "r" * (len(COLUMNS) - 3)
    _table.print_table(COLUMNS, [row_cells(r) for r in rows], align, markdown=markdown)


def parse_count(text: str) -> int:
    """'10M', '50M', '1e6', '250k' -> int."""
    text = text.strip().lower()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1], 1)
    return int(float(text[:-1] if scale != 1 else text) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rules", nargs="*", help="rule names (default: all registered)"
    )
    parser.add_argument(
        "--trees", nargs="*", default=["1", "200", "2000"], help="1, 20, 200, 2000"
    )
    parser.add_argument(
        "--params", default="10M", help="total parameters per tree (e.g. 10M, 50M)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--round-seconds", type=float, default=0.25, help="time per candidate per round"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1M params, 3 rounds, short rounds"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim")
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip the bfloat16-state variants"
    )
    parser.add_argument(
        "--flat",
        action="store_true",
        help="add each elementwise rule wrapped in jaxopt_rules.flat_leaves",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    if args.quick:
        args.params, args.rounds, args.round_seconds = "1M", 3, 0.1
    total = parse_count(args.params)
    rules = [s for s in jr.REGISTRY if not args.rules or s.name in args.rules]
    if args.rules and len(rules) != len(args.rules):
        known = ", ".join(s.name for s in jr.REGISTRY)
        parser.error(f"unknown rule in {args.rules}; registered: {known}")
    device = jax.devices()[0]
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"jaxopt_rules {jr.__version__}, torch {torch_version}; "
        f"{device.platform}: {getattr(device, 'device_kind', '')}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(
        f"median of {args.rounds} interleaved rounds; "
        "ratios are medians of per-round ratios"
    )
    rows: list[Row] = []
    for kind in args.trees:
        tree_rows = bench_tree(kind, total, rules, args)
        print()
        print_table(tree_rows, args.markdown)
        rows += tree_rows


if __name__ == "__main__":
    main()
