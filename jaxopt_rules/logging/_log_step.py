"""log_step: per-step optimizer statistics from inside jit, vmap, scan and grad.

The wrapped transform's updates and state are untouched; beside them the step
computes a few float32 statistics (``_statistics.py``, a table of name ->
function) and, on steps where ``count % every == 0``, hands them to the host
(``_emit.py``: one ``jax.debug.callback``, vmap-aware). With ``every > 1``
the statistics and the callback sit inside one ``lax.cond``, so the other
steps compute none of them. The host side turns the packed vector into
records (``_records.py``) and a :class:`~jaxopt_rules.logging.Dispatcher`,
owned by the transform's update function, delivers them off the training
thread (in order, each sink its own copy, drained at interpreter exit).
Around or inside ``optax.MultiSteps`` / ``optax.apply_if_finite``, records
describe the applied updates (``_applied.py``).

What it costs, and why (``benchmarks/NOTES.md``): on XLA:CPU any executable
holding a host callback runs synchronously and is dispatched on JAX's Python
path (about 6 us per argument or result array here), and statistics of the
updates materialise them (XLA:CPU does not fuse a reduction with the update).
"""

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import collecting, is_hole, safe_increment
from jaxopt_rules.logging._applied import (
    InnerStatus,
    OuterStatus,
    applied_despite_nonfinite,
    enclosing_status,
    outer_status,
)
from jaxopt_rules.logging._dispatch import Dispatcher
from jaxopt_rules.logging._emit import emitter, host_emit
from jaxopt_rules.logging._records import (
    SEPARATOR,
    Layout,
    leaf_names,
    leaves_and_paths,
    record_report_name,
    report_namer,
)
from jaxopt_rules.logging._sinks import LoggingSink, Record
from jaxopt_rules.logging._statistics import (
    STATISTICS,
    Totals,
    evaluate,
    needed,
    nonfinite_flag,
    sum_squares,
)


DEFAULT_STATS = (*STATISTICS, "nonfinite")
"""The statistics log_step computes unless told otherwise."""
RESERVED_FIELDS = (*DEFAULT_STATS, "step", "batch_index", "applied", "micro_steps")
"""Record fields that a ``custom`` statistic may not be named."""
StatFn = Callable[[Any, Any, Any, Any], jax.Array]
"""A user statistic: ``fn(grads, updates, params, inner_state) -> scalar``."""


class LogStepState(NamedTuple):
    """State of :func:`log_step`: a step counter and the inner state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner: Any


class StepLogger:
    """The update function of a :func:`log_step`, and the owner of its delivery.

    Holds the wrapped transform, the options, and the
    :class:`~jaxopt_rules.logging.Dispatcher` (a thread and the sinks) that
    its records go to; the host callback reaches the dispatcher through a
    weak reference, so JAX's caches never keep a dropped log_step's thread
    and files alive. Called as ``update(updates, state, params, **extra)``.

    Args:
        tx: the wrapped transform.
        every: report on steps where ``count % every == 0``.
        stats: built-in statistics to compute, in record order.
        per_leaf: also report each leaf's gradient norm.
        custom: name -> ``fn(grads, updates, params, inner_state)``.
        axis_name: the ``shard_map`` axis the leaves are sharded over.
        dispatcher: where the records go.
    """

    def __init__(
        self,
        tx: optax.GradientTransformation,
        *,
        every: int,
        stats: tuple[str, ...],
        per_leaf: bool,
        custom: dict[str, StatFn],
        axis_name: str | None,
        dispatcher: Dispatcher,
    ) -> None:
        self.tx = tx
        self.every = every
        self.stats = stats
        self.per_leaf = per_leaf
        self.custom = custom
        self.axis_name = axis_name
        self.dispatcher = dispatcher

    def init(self, params: optax.Params) -> LogStepState:
        """A zero step count and the inner transform's state."""
        return LogStepState(jnp.zeros([], jnp.int32), self.tx.init(params))

    def __call__(
        self,
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, LogStepState]:
        """The inner update, unchanged; the statistics and the callback beside it."""
        if not isinstance(state, LogStepState):
            raise TypeError(
                "log_step: expected the LogStepState returned by this transform's "
                f"init, got {type(state).__name__}"
            )
        inside = enclosing_status()  # trace time: inside MultiSteps/apply_if_finite?
        count = jax.lax.stop_gradient(state.count)
        with collecting() as reports:
            new_updates, inner = self.tx.update(
                updates, state.inner, params, **extra_args
            )
        outside = outer_status(state.inner, inner)
        fire, kept = _gate(count % self.every == 0, inside, outside)
        reads_params = params is not None and "params" in needed(self.stats)
        _, paths = leaves_and_paths(updates, is_hole)
        suffixes = report_namer(paths)
        grads, updates_out, params_in, inner_out, reported = jax.lax.stop_gradient(
            (updates, new_updates, params, inner, [value for _, value in reports])
        )
        step = _Step(
            number=count,
            fire=fire,
            kept=kept,
            inside=inside,
            outside=outside,
            leaf_names=leaf_names(paths, unique=self.per_leaf),
            report_names=tuple(record_report_name(n, suffixes) for n, _ in reports),
            reads_params=reads_params,
            grads=grads,
            updates=updates_out,
            params=params_in,
            inner_before=state.inner,
            inner_after=inner_out,
            reported=reported,
        )
        if self.every == 1 and kept is None:
            done, applied = self._report(step)
        else:
            # Only the steps that report compute the statistics.
            done, applied = jax.lax.cond(
                fire,
                lambda: self._report(step),
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

    def _report(self, step: "_Step") -> tuple[jax.Array, jax.Array]:
        """Computes this step's record on device and emits it.

        Returns a zero scalar (to order the updates after the reads) and
        whether this step's update is applied.
        """
        grads = leaves_and_paths(step.grads, is_hole)[0]
        # Each leaf's sum of squares once: the global norm, the per-leaf
        # norms and the non-finite flags all read them.
        local_sq = [sum_squares([g]) for g in grads]
        totals, leaf_sq = self._totals(step, local_sq)
        applied = _applied(step.kept, step.outside, step.updates)
        names, values = _wrapper_fields(step, applied)
        stat_names, stat_values = evaluate(self.stats, totals)
        names += stat_names
        values += stat_values
        for name, fn in self.custom.items():
            names.append(name)
            value = fn(step.grads, step.updates, step.params, step.inner_after)
            values.append(_custom_scalar(name, value))
        for name, value in zip(step.report_names, step.reported, strict=True):
            names.append(_unique(name, names))
            value = jnp.asarray(value, jnp.float32)
            if self.axis_name is not None:  # a per-shard value: the mean
                value = jax.lax.pmean(value, self.axis_name)
            values.append(value)
        nonfinite = "nonfinite" in self.stats
        if nonfinite:
            flags = [
                nonfinite_flag(g, sq) for g, sq in zip(grads, local_sq, strict=True)
            ]
            if self.axis_name is not None:
                flags = [jax.lax.psum(f, self.axis_name) for f in flags]
            values.extend(flags)
        if self.per_leaf:
            values.extend(jnp.sqrt(n) for n in leaf_sq)
        layout = Layout(tuple(names), step.leaf_names, nonfinite, self.per_leaf)
        vector = jnp.stack(values) if values else jnp.zeros((0,), jnp.float32)
        emitted = step.fire
        if self.axis_name is not None:
            emitted = emitted & (jax.lax.axis_index(self.axis_name) == 0)
        callback = functools.partial(host_emit, weakref.ref(self.dispatcher), layout)
        emitter(callback)(emitted, step.number, vector)
        return jnp.sum(vector) * 0.0, applied

    def _totals(
        self, step: "_Step", local_sq: list[jax.Array]
    ) -> tuple[Totals, list[jax.Array]]:
        """The sums the statistics read (over every shard), and each leaf's."""
        leaf_sq = local_sq
        param_sq = update_sq = None
        if step.reads_params:
            param_sq = sum_squares(leaves_and_paths(step.params, is_hole)[0])
        if "updates" in needed(self.stats):
            update_sq = sum_squares(leaves_and_paths(step.updates, is_hole)[0])
        if self.axis_name is not None:
            leaf_sq = jax.lax.psum(leaf_sq, self.axis_name)
            if update_sq is not None:
                update_sq = jax.lax.psum(update_sq, self.axis_name)
            if param_sq is not None:
                param_sq = jax.lax.psum(param_sq, self.axis_name)
        grad_sq = sum(leaf_sq, jnp.zeros((), jnp.float32))
        return Totals(grad_sq, update_sq, param_sq, step.inner_before), leaf_sq


class _Step(NamedTuple):
    """What one traced step hands to :meth:`StepLogger._report`."""

    number: jax.Array  # the step number (counts applied updates)
    fire: jax.Array  # bool: this step reports
    kept: jax.Array | None  # bool: its update is kept (None: always)
    inside: InnerStatus | None  # log_step runs inside MultiSteps/apply_if_finite
    outside: OuterStatus | None  # the inner state holds one of them
    leaf_names: tuple[str, ...]  # record paths of the gradient's leaves
    report_names: tuple[str, ...]  # record names of what the inner update reported
    reads_params: bool  # the statistics read the parameters
    grads: Any  # the step's inputs and outputs, without gradients through them
    updates: Any
    params: Any
    inner_before: Any
    inner_after: Any
    reported: list[Any]


def _wrapper_fields(
    step: _Step, applied: jax.Array
) -> tuple[list[str], list[jax.Array]]:
    """``applied`` and ``micro_steps`` when MultiSteps/apply_if_finite is involved."""
    if step.inside is None and step.outside is None:
        return [], []
    names, values = ["applied"], [applied.astype(jnp.float32)]
    micro = _micro_steps(step.inside, step.outside)
    if micro is not None:
        names.append("micro_steps")
        values.append(micro.astype(jnp.float32))
    return names, values


class LoggedTransformation(optax.GradientTransformationExtraArgs):
    """An optax transform that also reports statistics; see :func:`log_step`.

    A plain ``(init, update)`` pair whose ``update`` is a :class:`StepLogger`,
    which owns the delivery thread and the sinks: copies of the pair
    (``_replace``, optax rebuilding it) share them.
    """

    @property
    def dispatcher(self) -> Dispatcher:
        """The :class:`~jaxopt_rules.logging.Dispatcher` the records go to."""
        update = self.update
        if not isinstance(update, StepLogger):
            raise TypeError(
                "LoggedTransformation: update is not the StepLogger that "
                f"log_step made (got {type(update).__name__}); build it with "
                "log_step"
            )
        return update.dispatcher

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
         "nonfinite": ["decoder/w"]}

    Statistics (float32, on device): ``grad_norm``, ``update_norm``,
    ``param_norm`` (global L2 norms; the last two need ``params``),
    ``update_param_ratio`` (``update_norm / param_norm``), ``learning_rate``
    (when the inner state has ``optax.inject_hyperparams`` hyperparameters),
    ``nonfinite`` (the paths of the leaves whose gradient holds a NaN or an
    infinity), with ``per_leaf`` each leaf's gradient norm
    (``grad_norm/a/w``), ``custom`` statistics, and whatever the inner
    transform names with :func:`~jaxopt_rules.report` (a rule's per-leaf value
    arrives as ``name/a/w``; LAMB reports ``trust_ratio/a/w``).

    Records are flat dicts; a per-leaf value's key is the statistic's name
    and the leaf's path joined by ``/`` (:data:`SEPARATOR`): dict keys as
    they are, sequence indices as numbers, attribute names as names, so
    ``{"enc": [w0, w1]}`` gives ``grad_norm/enc/0`` and ``grad_norm/enc/1``
    (:func:`path_name`). These keys are the columns of a CSV file, the keys
    of a JSON line (``key.split("/", 1)`` gives the statistic and the leaf)
    and TensorBoard tags (grouped by statistic). ``nonfinite`` lists leaf
    paths in the same form. Two leaves whose paths would give the same key
    (a dict key holding ``/`` beside a nested one) are refused with
    ``per_leaf`` by an error naming both.

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
            (``RESERVED_FIELDS``, ``grad_norm/...``) or holding ``/`` is
            refused; a non-scalar result raises an error naming the statistic.
        sinks: callables taking a record, or ``.jsonl``/``.csv`` paths (a
            :class:`~jaxopt_rules.JsonLinesSink` or
            :class:`~jaxopt_rules.CsvSink` appending to the file, each record
            readable as soon as it is delivered); by default a
            :class:`~jaxopt_rules.LoggingSink` (``INFO`` level).
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

        Per-leaf values are keyed by leaf path:

        >>> records.clear()
        >>> grads = {"l1": {"w": jnp.array([3.0, 4.0])}, "l2": [jnp.ones(4)]}
        >>> leafy = jr.log_step(
        ...     jr.sgd(0.1), every=1, per_leaf=True, sinks=[records.append]
        ... )
        >>> _ = jax.jit(leafy.update)(grads, leafy.init(grads), grads)
        >>> leafy.close()
        >>> {k: v for k, v in records[0].items() if k.startswith("grad_norm/")}
        {'grad_norm/l1/w': 5.0, 'grad_norm/l2/0': 2.0}
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"log_step: every must be a positive integer, got {every!r}")
    stats = tuple(stats)
    known = (*STATISTICS, "nonfinite")
    unknown = sorted(set(stats) - set(known))
    if unknown:
        raise ValueError(
            f"log_step: unknown statistics {unknown}; choose from {known} "
            "or pass your own as custom={name: fn}"
        )
    custom = dict(custom or {})
    for name, fn in custom.items():
        _check_custom(name, fn)
    update = StepLogger(
        tx,
        every=every,
        stats=stats,
        per_leaf=per_leaf,
        custom=custom,
        axis_name=axis_name,
        dispatcher=Dispatcher(list(sinks) or [LoggingSink()]),
    )
    return LoggedTransformation(
        update.init, cast(optax.TransformUpdateExtraArgsFn, update)
    )


def _check_custom(name: Any, fn: Any) -> None:
    """Refuses a custom statistic that is misnamed or not a function."""
    if not isinstance(name, str):
        raise TypeError(f"log_step: custom statistic names must be str, got {name!r}")
    if name in RESERVED_FIELDS or name.startswith(f"grad_norm{SEPARATOR}"):
        raise ValueError(
            f"log_step: custom statistic {name!r} is named like a built-in "
            f"record field and would replace it; rename it (taken: "
            f"{RESERVED_FIELDS} and grad_norm{SEPARATOR}...)"
        )
    if SEPARATOR in name:
        raise ValueError(
            f"log_step: custom statistic {name!r} holds {SEPARATOR!r}, which "
            "separates a statistic from a leaf path in record keys; rename it"
        )
    if not callable(fn):
        raise TypeError(
            f"log_step: custom statistic {name!r} must be a function "
            f"fn(grads, updates, params, inner_state), got {type(fn).__name__}"
        )


def _unique(name: str, taken: Sequence[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... if a statistic already has it."""
    if name not in taken:
        return name
    k = 2
    while f"{name}#{k}" in taken:
        k += 1
    return f"{name}#{k}"


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
