"""log_step: per-step optimizer statistics from inside jit, vmap, scan and grad.

The wrapped transform's updates and state are untouched; beside them the step
computes a few float32 statistics and, on steps where ``count % every == 0``,
hands them to the host with one ``jax.debug.callback`` (never ``io_callback``,
which breaks ``grad``; never ``ordered=True``, which fails on several
devices). With ``every > 1`` the statistics and the callback sit inside one
``lax.cond``, so the other steps compute none of them; under ``vmap`` the
emitter is a ``custom_vmap`` that reduces the predicate with ``any`` and sends
the whole batch in one call, so a population of runs costs one callback per
fired step, not one per member. The host side turns the packed vector into
records and a :class:`~jaxopt_rules.wrappers.Dispatcher` delivers them off the
training thread (in order, each sink its own copy, drained at interpreter exit).
Around or inside ``optax.MultiSteps`` / ``optax.apply_if_finite``, records
describe the applied updates (``_applied.py``).

What it costs, and why (``benchmarks/README.md``): on XLA:CPU any executable
holding a host callback runs synchronously and is dispatched on JAX's Python
path (about 6 us per argument or result array here), and statistics of the
updates materialise them (XLA:CPU does not fuse a reduction with the update).
"""

import atexit
import functools
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import keystr

from jaxopt_rules._core._report import collecting
from jaxopt_rules._core._state import safe_increment
from jaxopt_rules._core._tree import is_hole
from jaxopt_rules.wrappers._applied import (
    InnerStatus,
    OuterStatus,
    applied_despite_nonfinite,
    enclosing_status,
    outer_status,
)
from jaxopt_rules.wrappers._dispatch import Dispatcher, close_all
from jaxopt_rules.wrappers._sinks import LoggingSink, Record


GLOBAL_STATS = ("grad_norm", "update_norm", "param_norm", "update_param_ratio")
DEFAULT_STATS = (*GLOBAL_STATS, "learning_rate", "nonfinite")
RESERVED_FIELDS = (*DEFAULT_STATS, "step", "batch_index", "applied", "micro_steps")
"""Record fields that a ``custom`` statistic may not be named."""
StatFn = Callable[[Any, Any, Any, Any], jax.Array]
"""A user statistic: ``fn(grads, updates, params, inner_state) -> scalar``."""

_LOG = logging.getLogger("jaxopt_rules")


def _drain_at_exit() -> None:
    """At interpreter exit: take every fired record from the device, deliver all.

    Registered after JAX's own exit hooks, so it runs before them (``atexit``
    runs last-registered first), while the backend still exists.
    """
    try:
        jax.effects_barrier()
    except Exception:
        _LOG.exception("jaxopt_rules: could not wait for pending step records")
    close_all()


atexit.register(_drain_at_exit)


class LogStepState(NamedTuple):
    """State of :func:`log_step`: a step counter and the inner state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner: Any


class LoggedTransformation(optax.GradientTransformationExtraArgs):
    """An optax transform that also reports statistics; see :func:`log_step`."""

    dispatcher: Dispatcher

    def flush(self) -> None:
        """Waits until every record emitted so far reached the sinks.

        Call ``jax.effects_barrier()`` first (from the thread that ran the
        steps) so that the device has handed over every fired record.
        """
        jax.effects_barrier()
        self.dispatcher.flush()

    def close(self) -> None:
        """Flushes, then closes the sinks (at once when called from a sink).

        Optional: a log_step never closed is drained and closed at interpreter
        exit, or when it is garbage-collected.
        """
        jax.effects_barrier()
        self.dispatcher.close()

    def __enter__(self) -> "LoggedTransformation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _leaves_with_names(tree: Any) -> tuple[list[Any], list[str]]:
    pairs = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_hole)[0]
    kept = [(keystr(path), leaf) for path, leaf in pairs if not is_hole(leaf)]
    return [leaf for _, leaf in kept], [name for name, _ in kept]


def _sum_squares(leaves: Sequence[Any]) -> jax.Array:
    """Sum of squares over leaves, in float32.

    Written ``abs(x) * abs(x)`` (two ``abs``) on purpose: XLA:CPU turns a
    reduction of ``y * y`` into one that needs ``y * y`` materialised, a
    parameter-sized temporary (page-faulted every step); the product of two
    distinct ``abs`` (the same bits) fuses into the reduction and reads ``x``
    in place (``benchmarks/logging_overhead.py``).
    """
    total = jnp.zeros((), jnp.float32)
    for leaf in leaves:
        x = jnp.asarray(leaf)
        if x.dtype == jax.dtypes.float0:
            continue  # gradients of integer leaves: no values
        if not jnp.iscomplexobj(x):  # complex: abs is the magnitude
            x = x.astype(jnp.float32)
        size = jnp.abs(x).astype(jnp.float32)
        total = total + jnp.sum(size * jnp.abs(x).astype(jnp.float32))
    return total


def _nonfinite_flag(leaf: Any, sum_squares: jax.Array) -> jax.Array:
    """1.0 if ``leaf`` holds a NaN or an infinity, else 0.0 (float32).

    Read from the leaf's sum of squares, which the norms compute anyway: it is
    finite whenever every element is, unless the squares overflow (elements
    beyond about 1e19), and only then is the leaf itself scanned, inside a
    ``cond``. A separate ``max(|g|)`` beside the norm's ``|g| * |g|`` made XLA
    share ``|g|`` between the two reductions and materialise it: a
    parameter-sized temporary every step.
    """

    def scan(leaf: Any, sum_squares: jax.Array) -> jax.Array:
        # Not max(|x|): on XLA:CPU a max over 4096 or more elements can drop
        # a NaN. isfinite per element, then a logical reduction, cannot.
        x = jnp.asarray(leaf)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return sum_squares * 0.0  # integers are always finite
        bad = jnp.any(~jnp.isfinite(x))
        return bad.astype(jnp.float32)

    def finite(leaf: Any, sum_squares: jax.Array) -> jax.Array:
        return sum_squares * 0.0  # zero, typed like the value (shard_map)

    return jax.lax.cond(jnp.isfinite(sum_squares), finite, scan, leaf, sum_squares)


def _find_learning_rate(state: Any) -> jax.Array | None:
    """``learning_rate`` from an ``inject_hyperparams`` state inside ``state``."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        hyper = getattr(node, "hyperparams", None)
        if isinstance(hyper, Mapping) and "learning_rate" in hyper:
            found.append(hyper["learning_rate"])
            return
        if isinstance(node, tuple | list):
            for child in node:
                visit(child)

    visit(state)
    return jnp.asarray(found[0], jnp.float32) if found else None


def _unique(name: str, taken: Sequence[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... if a statistic already has it."""
    if name not in taken:
        return name
    k = 2
    while f"{name}#{k}" in taken:
        k += 1
    return f"{name}#{k}"


_NEEDS_PARAMS = frozenset({"param_norm", "update_param_ratio"})
_NEEDS_UPDATES = frozenset({"update_norm", "update_param_ratio"})


def _after(done: jax.Array, tree: Any) -> Any:
    """``tree`` unchanged, but computed after the float32 scalar ``done``.

    ``done`` is zero or NaN, so ``~(done > 0)`` is always true, but XLA cannot
    prove it: each leaf becomes ``where(true, leaf, 0)``, the same bits, with a
    data dependence on ``done``.
    """
    keep = ~(done > 0)
    return jax.tree.map(
        lambda x: x if is_hole(x) else jnp.where(keep, x, jnp.zeros_like(x)),
        tree,
        is_leaf=is_hole,
    )


class _Layout(NamedTuple):
    """What each slot of the packed statistics vector means (static)."""

    names: tuple[str, ...]  # scalar statistics, in order
    leaf_names: tuple[str, ...]  # one per leaf: non-finite counts (and norms)
    nonfinite: bool
    per_leaf_norms: bool


def _make_record(layout: _Layout, step: int, values: np.ndarray) -> dict[str, Any]:
    record: dict[str, Any] = {"step": step}
    n = len(layout.names)
    for name, value in zip(layout.names, values[:n], strict=True):
        if name == "applied":
            record[name] = bool(value)
        elif name == "micro_steps":
            record[name] = int(value)
        else:
            record[name] = float(value)
    offset = n
    leaves = len(layout.leaf_names)
    if layout.nonfinite:
        counts = values[offset : offset + leaves]
        record["nonfinite"] = [
            name for name, c in zip(layout.leaf_names, counts, strict=True) if c > 0
        ]
        offset += leaves
    if layout.per_leaf_norms:
        for name, value in zip(
            layout.leaf_names, values[offset : offset + leaves], strict=True
        ):
            record[f"grad_norm{name}"] = float(value)
    return record


def _host_emit(
    dispatcher_ref: "weakref.ref[Dispatcher]",
    layout: _Layout,
    fire: Any,
    count: Any,
    values: Any,
) -> None:
    """Runs on the host: split leading (vmap) axes into records; submit fired ones.

    The dispatcher is held weakly: JAX's caches keep this callback, and must
    not keep a dropped log_step's thread and files alive.
    """
    dispatcher = dispatcher_ref()
    if dispatcher is None:
        _LOG.warning("jaxopt_rules: a step record of a discarded log_step was dropped")
        return
    fire = np.asarray(fire)
    count = np.asarray(count)
    values = np.asarray(values, np.float64)
    batch_shape = tuple(fire.shape)
    for index in np.ndindex(*batch_shape):
        if not fire[index]:
            continue
        record = _make_record(layout, int(count[index]), values[index])
        if len(batch_shape) == 1:
            record["batch_index"] = int(index[0])
        elif batch_shape:
            record["batch_index"] = [int(i) for i in index]
        dispatcher.submit(record)


def _emitter(callback: Callable[..., None]) -> Callable[..., None]:
    """``emit(fire, count, values)``: one callback when fired, vmap-aware."""

    @jax.custom_batching.custom_vmap
    def emit(fire: jax.Array, count: jax.Array, values: jax.Array) -> jax.Array:
        def fired(fire: jax.Array, count: jax.Array, values: jax.Array) -> None:
            jax.debug.callback(callback, fire, count, values)

        jax.lax.cond(jnp.any(fire), fired, lambda *a: None, fire, count, values)
        return jnp.zeros((), jnp.int32)

    @emit.def_vmap
    def emit_batched(
        axis_size: int,
        in_batched: Sequence[bool],
        fire: jax.Array,
        count: jax.Array,
        values: jax.Array,
    ) -> tuple[jax.Array, bool]:
        def lead(x: jax.Array, batched: bool) -> jax.Array:
            return x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))

        fire, count, values = (
            lead(x, b) for x, b in zip((fire, count, values), in_batched, strict=True)
        )
        # The batch becomes a leading axis of one call: the recursive call
        # handles any enclosing vmap the same way.
        out = emit(fire, count, values)
        return jnp.broadcast_to(out, (axis_size,)), True

    return emit


def log_step(
    tx: optax.GradientTransformation,
    *,
    every: int = 100,
    stats: Iterable[str] = DEFAULT_STATS,
    per_leaf: bool = False,
    custom: Mapping[str, StatFn] | None = None,
    sinks: Iterable[Callable[[Record], None] | str] = (),
    axis_name: str | None = None,
) -> LoggedTransformation:
    r"""Wraps any optax transform so that it reports per-step statistics.

    The updates and the inner state are exactly those of ``tx``. Every
    ``every`` steps (``count % every == 0``, counting from 0), one record per
    run reaches the sinks, off the training thread and in step order::

        {"step": 300, "grad_norm": 0.12, "update_norm": 3e-3, "param_norm": 41.0,
         "update_param_ratio": 7e-5, "learning_rate": 1e-3,
         "nonfinite": ["['decoder']['w']"]}

    Statistics (float32, on device): ``grad_norm``, ``update_norm``,
    ``param_norm`` (global L2 norms; the last two need ``params``),
    ``update_param_ratio`` (``update_norm / param_norm``), ``learning_rate``
    (when the inner state has ``optax.inject_hyperparams`` hyperparameters),
    ``nonfinite`` (the paths of the leaves whose gradient holds a NaN or an
    infinity), with ``per_leaf`` each leaf's gradient norm
    (``grad_norm['a']['w']``), ``custom`` statistics, and whatever the inner
    transform names with :func:`~jaxopt_rules.report` (a rule's per-leaf value
    arrives as ``name['a']['w']``; LAMB reports ``trust_ratio``).

    ``nonfinite`` tests every element with ``isfinite`` (never a ``max``,
    which on XLA:CPU can drop a NaN from 4096 elements on); a leaf with no
    elements has norm 0 and is never non-finite.

    Updates that are not applied (``optax.MultiSteps``,
    ``optax.apply_if_finite``): records describe applied updates, and
    ``step`` counts applied updates, wherever ``log_step`` is placed. When
    ``tx``'s state holds one of these wrappers (``log_step`` around it), or
    when ``log_step`` runs inside one (found at trace time from optax 0.2.8's
    ``update``), each record gets ``"applied"`` (bool) and, for MultiSteps,
    ``"micro_steps"`` (gradients accumulated into the update), and:

    - ``MultiSteps``: only the micro-step that emits the update reports
      (``every`` counts emitted updates). Around it, ``grad_norm`` is that
      micro-step's gradient; inside it, the accumulated gradient the inner
      optimizer received.
    - ``apply_if_finite`` around: a step it rejects always reports, with
      ``"applied": False``, ``update_norm`` 0 and the ``nonfinite`` leaves,
      under the step number the next applied update will have; a step it
      applies after ``max_consecutive_errors`` rejections has
      ``"applied": True``. Inside it, rejected steps are not seen (the inner
      ``update`` does not run), so put ``log_step`` around it to see them.

    Delivery: records go to the sinks in order on one thread per
    ``log_step``, each sink receiving its own copy. Nothing emitted is lost
    at exit: at interpreter exit (normal, or an uncaught exception) the
    pending records are taken from the device and delivered, and the sinks
    closed, even without ``close()``. A sink that raises anything is logged
    once with its traceback, then counted (the count is logged at close); it
    never stops training or the other sinks. ``close()`` called from a sink
    returns at once. A ``log_step`` that is dropped without ``close()``
    closes its sinks and stops its thread when garbage-collected. With no
    ``sinks``, records are logged at ``INFO`` on ``"jaxopt_rules.steps"``;
    if that logger drops them (Python's default level is ``WARNING``), a
    one-time warning says how to see them.

    Args:
        tx: the transform to wrap (ours, optax's, chains).
        every: report on steps where ``count % every == 0``.
        stats: which of ``DEFAULT_STATS`` to compute.
        per_leaf: also report each leaf's gradient norm.
        custom: name -> ``fn(grads, updates, params, inner_state)`` returning a
            scalar, computed on device. A name of a built-in field
            (``RESERVED_FIELDS``, ``grad_norm[...]``) is refused; a non-scalar
            result raises an error naming the statistic.
        sinks: callables taking a record, or ``.jsonl``/``.csv`` paths; by
            default a :class:`~jaxopt_rules.LoggingSink` (``INFO`` level).
        axis_name: inside ``shard_map``, the mesh axis the leaves are sharded
            over: statistics are reduced over it and one device reports.

    Returns:
        A :class:`LoggedTransformation`: an optax transform with ``flush()``,
        ``close()`` and context-manager support.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> records = []
        >>> tx = jr.log_step(jr.sgd(0.1), every=2, sinks=[records.append])
        >>> params = {"w": jnp.ones(3)}
        >>> state = tx.init(params)
        >>> for _ in range(3):
        ...     updates, state = jax.jit(tx.update)(params, state, params)
        >>> tx.flush()
        >>> [(r["step"], round(r["grad_norm"], 4)) for r in records]
        [(0, 1.7321), (2, 1.7321)]

        Around gradient accumulation, one record per applied update:

        >>> acc = jr.log_step(
        ...     optax.MultiSteps(jr.sgd(0.1), every_k_schedule=2),
        ...     every=1,
        ...     sinks=[records.append],
        ... )
        >>> records.clear()
        >>> state = acc.init(params)
        >>> for _ in range(4):
        ...     updates, state = jax.jit(acc.update)(params, state, params)
        >>> acc.close()
        >>> [(r["step"], r["applied"], r["micro_steps"]) for r in records]
        [(0, True, 2), (1, True, 2)]
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"log_step: every must be a positive integer, got {every!r}")
    stats = tuple(stats)
    unknown = sorted(set(stats) - set(DEFAULT_STATS))
    if unknown:
        raise ValueError(
            f"log_step: unknown statistics {unknown}; choose from {DEFAULT_STATS} "
            "or pass your own as custom={name: fn}"
        )
    custom = dict(custom or {})
    for name, fn in custom.items():
        if not isinstance(name, str):
            raise TypeError(
                f"log_step: custom statistic names must be str, got {name!r}"
            )
        if name in RESERVED_FIELDS or name.startswith("grad_norm["):
            raise ValueError(
                f"log_step: custom statistic {name!r} is named like a built-in "
                f"record field and would replace it; rename it (taken: "
                f"{RESERVED_FIELDS} and grad_norm[...])"
            )
        if not callable(fn):
            raise TypeError(
                f"log_step: custom statistic {name!r} must be a function "
                f"fn(grads, updates, params, inner_state), got {type(fn).__name__}"
            )
    dispatcher = Dispatcher(list(sinks) or [LoggingSink()])
    dispatcher_ref = weakref.ref(dispatcher)

    def init_fn(params: optax.Params) -> Any:
        return LogStepState(jnp.zeros([], jnp.int32), tx.init(params))

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        if not isinstance(state, LogStepState):
            raise TypeError(
                "log_step: expected the LogStepState returned by this transform's "
                f"init, got {type(state).__name__}"
            )
        wanted = set(stats)
        inside = enclosing_status()  # trace time: inside MultiSteps/apply_if_finite?
        count = jax.lax.stop_gradient(state.count)
        with collecting() as reports:
            new_updates, inner = tx.update(updates, state.inner, params, **extra_args)
        outside = outer_status(state.inner, inner)
        fire, kept = _gate(count % every == 0, inside, outside)
        reads_params = params is not None and bool(wanted & _NEEDS_PARAMS)
        report_names = [name for name, _ in reports]
        frozen = jax.lax.stop_gradient(
            (updates, new_updates, params, inner, [value for _, value in reports])
        )

        def statistics() -> tuple[jax.Array, jax.Array]:
            """Computes and emits this step's record.

            Returns a zero scalar (to order the updates after the reads) and
            whether this step's update is applied.
            """
            grads_in, updates_out, params_in, inner_out, reported = frozen
            grads, leaf_names = _leaves_with_names(grads_in)
            # Each leaf's sum of squares once: the global norm, the per-leaf
            # norms and the non-finite flags all read them.
            local_sq = [_sum_squares([g]) for g in grads]
            leaf_sq = local_sq
            param_sq = update_sq = None
            if reads_params:
                param_sq = _sum_squares(_leaves_with_names(params_in)[0])
            if wanted & _NEEDS_UPDATES:
                update_sq = _sum_squares(_leaves_with_names(updates_out)[0])
            if axis_name is not None:
                leaf_sq = jax.lax.psum(leaf_sq, axis_name)
                if update_sq is not None:
                    update_sq = jax.lax.psum(update_sq, axis_name)
                if param_sq is not None:
                    param_sq = jax.lax.psum(param_sq, axis_name)
            grad_sq = sum(leaf_sq, jnp.zeros((), jnp.float32))
            names: list[str] = []
            values: list[jax.Array] = []
            applied = _applied(kept, outside, updates_out)
            if inside is not None or outside is not None:
                names.append("applied")
                values.append(applied.astype(jnp.float32))
                micro = _micro_steps(inside, outside)
                if micro is not None:
                    names.append("micro_steps")
                    values.append(micro.astype(jnp.float32))
            for name in stats:
                if name == "grad_norm":
                    value = jnp.sqrt(grad_sq)
                elif name == "update_norm" and update_sq is not None:
                    value = jnp.sqrt(update_sq)
                elif name == "param_norm" and param_sq is not None:
                    value = jnp.sqrt(param_sq)
                elif (
                    name == "update_param_ratio"
                    and update_sq is not None
                    and param_sq is not None
                ):
                    value = jnp.sqrt(update_sq) / jnp.sqrt(param_sq)
                elif name == "learning_rate":
                    found = _find_learning_rate(state.inner)
                    if found is None:
                        continue
                    value = found
                else:
                    continue
                names.append(name)
                values.append(value)
            for name, fn in custom.items():
                names.append(name)
                value = fn(grads_in, updates_out, params_in, inner_out)
                values.append(_custom_scalar(name, value))
            for name, value in zip(report_names, reported, strict=True):
                names.append(_unique(name, names))
                value = jnp.asarray(value, jnp.float32)
                if axis_name is not None:  # a per-shard value: the shards' mean
                    value = jax.lax.pmean(value, axis_name)
                values.append(value)
            nonfinite = "nonfinite" in wanted
            if nonfinite:
                flags = [
                    _nonfinite_flag(g, sq)
                    for g, sq in zip(grads, local_sq, strict=True)
                ]
                if axis_name is not None:
                    flags = [jax.lax.psum(f, axis_name) for f in flags]
                values.extend(flags)
            if per_leaf:
                values.extend(jnp.sqrt(n) for n in leaf_sq)
            layout = _Layout(tuple(names), tuple(leaf_names), nonfinite, per_leaf)
            vector = jnp.stack(values) if values else jnp.zeros((0,), jnp.float32)
            emitted = fire
            if axis_name is not None:
                emitted = emitted & (jax.lax.axis_index(axis_name) == 0)
            emit = _emitter(functools.partial(_host_emit, dispatcher_ref, layout))
            emit(emitted, count, vector)
            return jnp.sum(vector) * 0.0, applied

        if every == 1 and kept is None:
            done, applied = statistics()
        else:
            # Only the steps that report compute the statistics.
            done, applied = jax.lax.cond(
                fire,
                statistics,
                lambda: (jnp.zeros((), jnp.float32), _applied(kept, None, None)),
            )
        if reads_params:
            # The statistics read the parameters, which the caller's
            # apply_updates then overwrites in place: making the updates wait
            # for them lets XLA skip copying the parameters first.
            new_updates = _after(done, new_updates)
        new_count = safe_increment(state.count)
        if inside is not None or outside is not None:
            # The step number counts applied updates only.
            new_count = jnp.where(applied, new_count, state.count)
        return new_updates, LogStepState(new_count, inner)

    transform = LoggedTransformation(init_fn, update_fn)
    transform.dispatcher = dispatcher
    return transform


def _gate(
    due: jax.Array, inside: InnerStatus | None, outside: OuterStatus | None
) -> tuple[jax.Array, jax.Array | None]:
    """Whether a step reports, and whether its update is kept (None: always).

    A step reports when it is due (``count % every == 0``) and its update is
    kept by an enclosing or wrapped MultiSteps / apply_if_finite; a step that
    ``apply_if_finite`` (wrapped) found non-finite always reports.
    """
    kept = None
    if inside is not None:
        kept = inside.applied
    if outside is not None:
        kept = outside.emitted if kept is None else kept & outside.emitted
    fire = due if kept is None else due & kept
    if outside is not None and outside.finite is not None:
        fire = fire | ~outside.finite
    return fire, kept


def _applied(
    kept: jax.Array | None, outside: OuterStatus | None, updates: Any
) -> jax.Array:
    """Whether this step's update is applied (bool scalar)."""
    applied = jnp.array(True) if kept is None else kept
    if outside is not None and outside.finite is not None:
        assert outside.skip_inner is not None
        gave_up = applied_despite_nonfinite(outside.skip_inner, updates)
        applied = applied & (outside.finite | gave_up)
    return applied


def _micro_steps(
    inside: InnerStatus | None, outside: OuterStatus | None
) -> jax.Array | None:
    if inside is not None and inside.micro_steps is not None:
        return inside.micro_steps
    if outside is not None:
        return outside.micro_steps
    return None


def _custom_scalar(name: str, value: Any) -> jax.Array:
    """A custom statistic's value as a float32 scalar, or a clear error."""
    try:
        array = jnp.asarray(value)
    except TypeError as error:
        raise TypeError(
            f"log_step: custom statistic {name!r} must return a scalar array, "
            f"got {type(value).__name__}"
        ) from error
    if array.shape != ():
        raise ValueError(
            f"log_step: custom statistic {name!r} must return a scalar, got an "
            f"array of shape {array.shape}; reduce it (e.g. jnp.max) or log its "
            "entries as separate statistics"
        )
    return array.astype(jnp.float32)
