"""The rule core: one plain per-leaf function in, an optax transform factory out.

:func:`rule` reads the function once (see ``_definition.py``); calling the
resulting :class:`RuleFactory` binds hyperparameters (``_config.py``) and builds
an ``optax.GradientTransformationExtraArgs`` whose ``init`` and ``update`` do,
for every rule, what a hand-written optax transform must each do by itself:
NamedTuple state with a saturating int32 ``count``, tree mapping that skips
``None`` and ``optax.MaskedNode`` holes, schedules, the dtype policy, errors
that name the offending leaf, and init through tree maps only.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core._config import RuleConfig
from jaxopt_rules._core._constraints import Constraint, parse_constraint
from jaxopt_rules._core._definition import (
    ROUNDING_ARGS,
    RuleDefinition,
    Slot,
    read_definition,
)
from jaxopt_rules._core._report import report
from jaxopt_rules._core._rounding import new_state_key, slot_keys
from jaxopt_rules._core._state import safe_increment, state_class
from jaxopt_rules._core._stored import LeafRunner
from jaxopt_rules._core._tree import (
    describe_mismatch,
    fill_like,
    leaf_path,
    leaf_paths,
)


RuleFunction = Callable[..., Any]
"""A per-leaf rule: ``fn(grad, *slots, [param], [step], [stats], **hyperparams)``."""

ConstraintSpec = str | Constraint | Callable[[float], bool]


class RuleFactory:
    """A factory of optax transforms made from one per-leaf rule function.

    Calling it with hyperparameters returns an
    ``optax.GradientTransformationExtraArgs``. Its signature (``inspect``,
    ``help``, ``optax.inject_hyperparams``) lists the rule's hyperparameters,
    then one keyword-only storage-dtype argument per state slot, then
    ``stochastic_rounding`` and ``rounding_seed``.

    Attributes:
        definition: what the core read from the rule function.
        static_args: names to pass as ``static_args`` to
            ``optax.inject_hyperparams``: structural and per-leaf
            hyperparameters, the dtype arguments and the rounding arguments.
    """

    definition: RuleDefinition
    static_args: tuple[str, ...]
    __signature__: inspect.Signature

    def __init__(self, definition: RuleDefinition) -> None:
        self.definition = definition
        self.__name__ = definition.name
        self.__qualname__ = definition.name
        self.__doc__ = definition.fn.__doc__
        self.__module__ = definition.fn.__module__
        self.__wrapped__ = definition.fn
        self.__signature__ = _factory_signature(definition)
        self.static_args = (
            *sorted(definition.static),
            *sorted(definition.per_leaf),
            *definition.dtype_args.values(),
            *ROUNDING_ARGS,
        )

    def __call__(
        self, *args: Any, **kwargs: Any
    ) -> optax.GradientTransformationExtraArgs:
        """Binds hyperparameters and returns the optax transform."""
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.__name__}(): {error}") from None
        bound.apply_defaults()
        config = RuleConfig.bind(self.definition, bound.arguments)
        return build_transform(config)

    def __repr__(self) -> str:
        return f"<rule {self.__name__}{self.__signature__}>"


def _factory_signature(definition: RuleDefinition) -> inspect.Signature:
    parameters = []
    keyword_only = False
    for p in definition.hyperparams:
        # Hyperparameters are positional-or-keyword in declaration order, like
        # optax's aliases, until a required one follows an optional one.
        if (
            p.default is inspect.Parameter.empty
            and parameters
            and (parameters[-1].default is not inspect.Parameter.empty)
        ):
            keyword_only = True
        kind = (
            inspect.Parameter.KEYWORD_ONLY
            if keyword_only
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        parameters.append(p.replace(kind=kind))
    for dtype_arg in definition.dtype_args.values():
        parameters.append(
            inspect.Parameter(
                dtype_arg,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation="jax.typing.DTypeLike | None",
            )
        )
    parameters.append(
        inspect.Parameter(
            "stochastic_rounding",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=bool,
        )
    )
    parameters.append(
        inspect.Parameter(
            "rounding_seed",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation="int | None",
        )
    )
    return inspect.Signature(
        parameters, return_annotation=optax.GradientTransformationExtraArgs
    )


@overload
def rule(fn: RuleFunction, /) -> RuleFactory: ...


@overload
def rule(
    *,
    name: str | None = None,
    slots: Mapping[str, Slot] | None = None,
    static: Sequence[str] = (),
    per_leaf: Mapping[str, Any] | None = None,
    constraints: Mapping[str, ConstraintSpec] | None = None,
    global_stats: Callable[..., Mapping[str, Any]] | None = None,
) -> Callable[[RuleFunction], RuleFactory]: ...


def rule(
    fn: RuleFunction | None = None,
    /,
    *,
    name: str | None = None,
    slots: Mapping[str, Slot] | None = None,
    static: Sequence[str] = (),
    per_leaf: Mapping[str, Any] | None = None,
    constraints: Mapping[str, ConstraintSpec] | None = None,
    global_stats: Callable[..., Mapping[str, Any]] | None = None,
) -> RuleFactory | Callable[[RuleFunction], RuleFactory]:
    """Turns a per-leaf update function into a factory of optax transforms.

    The function works on the arrays of one leaf. Its first parameter is the
    gradient; its other positional parameters are state slots, or the reserved
    ``param`` (the parameter), ``step`` (``t``: 1 on the first update, a float
    in the compute dtype) and ``stats`` (the dict of global sums); its
    keyword-only parameters are the hyperparameters. It returns the update
    (already signed and scaled, ``-learning_rate * direction``), followed by
    the new value of each slot when it has slots::

        update, *new_slots = fn(grad, *slots, **hyperparams)

    The core maps it over the tree and handles, once for every rule:

    * state: a NamedTuple ``<Name>State(count, *slots)`` with an int32
      ``count`` that saturates instead of overflowing;
    * pytrees with ``None`` and ``optax.MaskedNode`` holes (``optax.masked``,
      ``optax.partition``);
    * schedules: any numeric hyperparameter may be a callable of the step
      count, evaluated at ``count`` before the increment, as optax does;
    * dtypes: arithmetic in ``promote_types(grad.dtype, float32)``, updates
      returned in the gradient's dtype, each slot stored in the dtype of its
      ``<slot>_dtype`` argument (default: the parameter's dtype); a slot
      stored in fewer bits than the compute dtype is rounded to its storage
      dtype as soon as the rule computes it, so the update reads the value
      that is stored, as ``torch.optim`` does with low-precision state (this
      spares XLA a per-step copy of the state); with
      ``stochastic_rounding=True`` slots stored in bfloat16 are rounded
      stochastically instead (unbiased; reproducible from ``rounding_seed``,
      whose key the state carries as ``rounding_key``); float hyperparameters, Python
      floats included, are rounded to the compute dtype before use, so
      baked-in and injected values give bit-identical results;
    * init through tree maps only, so ``jax.eval_shape`` and
      ``optax.tree_utils.tree_map_params`` work, with state sharded like the
      parameters under ``jax.jit``;
    * errors that name the problem: params missing, a gradient tree that does
      not match the state (with the path), non-float leaves, hyperparameters
      outside their constraints (checked on concrete numbers only).

    Rules that need more than one leaf at a time pass ``global_stats``: a
    per-leaf function returning a dict of scalars, summed over all leaves and
    handed to the rule as ``stats``. Rules that need a whole leaf (a norm, an
    orthogonalisation, a preconditioner) simply use it: the function always
    receives whole arrays.

    Args:
        fn: the per-leaf function (when used as ``@rule`` without arguments).
        name: the rule's name (default: the function's name); it names the
            state class, ``<Name>State``.
        slots: options per slot (:class:`Slot`): initial value, dtype argument
            name, presence condition, shape.
        static: structural hyperparameters (integers that fix shapes or loop
            counts, non-schedule callables): never traced.
        per_leaf: hyperparameters whose value is a pytree prefix of the
            gradients (or a callable returning one), mapped to the value used
            for each leaf; the dict value is what ``None`` stands for.
        constraints: per hyperparameter, ``"[0, 1)"``, ``">= 0"`` and the like,
            or a predicate.
        global_stats: ``f(grad, [param], [slots...], **hyperparams) -> dict``,
            per leaf, summed over leaves into ``stats``.

    Returns:
        A :class:`RuleFactory`, or a decorator producing one.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> @jr.rule
        ... def scaled_sgd(grad, *, learning_rate, factor=1.0):
        ...     return -learning_rate * factor * grad
        >>> tx = scaled_sgd(0.1, factor=2.0)
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params))
        >>> updates["w"]
        Array([-0.2, -0.2], dtype=float32)
    """

    def decorate(function: RuleFunction) -> RuleFactory:
        definition = read_definition(
            function,
            name=name,
            slots=slots or {},
            static=tuple(static),
            per_leaf=per_leaf or {},
            constraints={
                k: parse_constraint(v) for k, v in (constraints or {}).items()
            },
            global_stats=global_stats,
        )
        return RuleFactory(definition)

    if fn is not None:
        return decorate(fn)
    return decorate


# ---------------------------------------------------------------------------
# The transform


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def _cast_value(value: Any, dtype: np.dtype) -> Any:
    """Puts a floating hyperparameter value in the compute dtype.

    Python floats are converted too, on purpose: the rule then computes with
    the same rounded value whether a hyperparameter is a Python float baked
    into the program or an array from ``optax.inject_hyperparams`` (or a
    vmapped sweep), so both give bitwise-identical trajectories. (optax keeps
    Python floats in double precision for expressions such as ``1 - b2``, so
    its injected and plain trajectories drift apart: optax issues #583, #1532.)
    """
    if isinstance(value, float) or (
        isinstance(value, jax.Array | np.ndarray | np.generic)
        and jnp.issubdtype(value.dtype, jnp.floating)
    ):
        return jnp.asarray(value, dtype=dtype)
    return value


def _check_leaf(rule: str, tree: Any, index: int, leaf: Any, what: str) -> None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        raise TypeError(
            f"{rule}: {what} at {leaf_path(tree, index)} is a "
            f"{type(leaf).__name__}, not an array"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{rule}: {what} at {leaf_path(tree, index)} has dtype {dtype}; "
            "rules work on real floating-point leaves (float16, bfloat16, "
            "float32, float64). Exclude other leaves with optax.masked or "
            "optax.partition."
        )


def _per_leaf_values(
    config: RuleConfig, updates: Any, treedef: Any, n: int
) -> dict[str, list[Any]]:
    definition = config.definition
    values: dict[str, list[Any]] = {}
    for name, default in definition.per_leaf.items():
        value = config.arguments[name]
        if value is None:
            values[name] = [default] * n
            continue
        tree = value(updates) if callable(value) else value
        try:
            full = jax.tree.broadcast(tree, updates)
            values[name] = treedef.flatten_up_to(full)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{definition.name}: {name} must be a pytree prefix of the "
                f"gradients; {error}"
            ) from None
    return values


def _narrower(storage: np.dtype, compute: np.dtype) -> np.dtype | None:
    """``storage`` if it holds fewer bits than ``compute``, else ``None``."""
    if jnp.finfo(storage).bits < jnp.finfo(compute).bits:
        return storage
    return None


def _rounding_key(
    rule: str, tree: Any, index: int, storage: np.dtype | None, key: jax.Array
) -> jax.Array | None:
    """The stochastic-rounding key of one slot of one leaf, or None."""
    if storage is None:
        return None
    if storage != jnp.bfloat16:
        raise ValueError(
            f"{rule}: stochastic_rounding stores to bfloat16, but a slot of "
            f"{leaf_path(tree, index)} is stored in {storage}; pass a bfloat16 or "
            "32-bit dtype for it"
        )
    return key


def _slot_shape(option: Slot, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(option.shape(shape)) if option.shape is not None else shape


def build_transform(config: RuleConfig) -> optax.GradientTransformationExtraArgs:
    """The optax transform for one bound configuration of a rule."""
    definition = config.definition
    rule_name = definition.name
    options = dict(definition.slots)
    active = config.active_slots
    extra = ("rounding_key",) if config.stochastic_rounding else ()
    state_cls = state_class(rule_name, active, definition.slot_names, extra)

    def init_slot(slot: str, values: Mapping[str, Any], p: Any) -> Any:
        option = options[slot]
        storage = config.slot_dtypes[slot] or p.dtype
        if callable(option.init):
            value = option.init(p)
            return jnp.broadcast_to(value, _slot_shape(option, p.shape)).astype(storage)
        value = values[option.init] if isinstance(option.init, str) else option.init
        shape = _slot_shape(option, p.shape)
        if tuple(shape) != tuple(p.shape):
            return jnp.full(shape, value, storage)
        # Shaped like the parameter (always, or for this leaf): sharded like it.
        return fill_like(p, value, storage)

    def init_fn(params: optax.Params) -> Any:
        for i, p in enumerate(jax.tree.leaves(params)):
            _check_leaf(rule_name, params, i, p, "parameter")
        count = jnp.zeros([], jnp.int32)
        values = config.values_at(count)
        slots = {
            slot: jax.tree.map(lambda p, slot=slot: init_slot(slot, values, p), params)
            for slot in active
        }
        if config.stochastic_rounding:
            slots["rounding_key"] = new_state_key(config.rounding_seed)
        return state_cls(count, **slots)

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        del extra_args  # accepted and ignored, as the optax protocol asks
        if definition.needs_params and params is None:
            raise ValueError(
                f"{rule_name}: this rule reads the parameters, so they must be "
                "passed to update: tx.update(grads, state, params)"
            )
        # (Every NamedTuple has a .count method, so look at the fields.)
        if "count" not in getattr(state, "_fields", ()):
            raise TypeError(
                f"{rule_name}: expected the state returned by this transform's "
                f"init, got {type(state).__name__}"
            )
        if config.stochastic_rounding and "rounding_key" not in state._fields:
            raise TypeError(
                f"{rule_name}: with stochastic_rounding=True the state carries a "
                f"rounding_key; got {type(state).__name__} without one (a state "
                "from a factory called without stochastic_rounding?)"
            )
        grads, treedef = jax.tree.flatten(updates)
        for i, g in enumerate(grads):
            _check_leaf(rule_name, updates, i, g, "gradient")

        slot_leaves: dict[str, list[Any]] = {}
        for slot in active:
            try:
                tree = getattr(state, slot)
            except AttributeError:
                raise TypeError(
                    f"{rule_name}: the state has no slot {slot!r}; pass the state "
                    f"returned by this transform's init (got {type(state).__name__})"
                ) from None
            if jax.tree.structure(tree) != treedef:
                raise ValueError(
                    f"{rule_name}: the gradient tree does not match the state "
                    f"(slot {slot!r}): {describe_mismatch(tree, updates)}"
                )
            leaves = treedef.flatten_up_to(tree)
            for i, (g, s) in enumerate(zip(grads, leaves, strict=True)):
                expected = _slot_shape(options[slot], g.shape)
                if tuple(s.shape) != expected:
                    raise ValueError(
                        f"{rule_name}: gradient at {leaf_path(updates, i)} has shape "
                        f"{g.shape} but its state slot {slot!r} has shape "
                        f"{tuple(s.shape)} (expected {expected})"
                    )
            slot_leaves[slot] = leaves
        param_leaves: list[Any] = []
        if params is not None:
            # Checked whenever given (a stateless rule has no other tree to
            # compare with), read only when the rule needs it.
            if jax.tree.structure(params) != treedef:
                raise ValueError(
                    f"{rule_name}: the gradient tree does not match the parameter "
                    f"tree: {describe_mismatch(params, updates)}"
                )
            leaves = treedef.flatten_up_to(params)
            for i, (g, p) in enumerate(zip(grads, leaves, strict=True)):
                _check_leaf(rule_name, params, i, p, "parameter")
                if tuple(p.shape) != tuple(g.shape):
                    raise ValueError(
                        f"{rule_name}: gradient at {leaf_path(updates, i)} has shape "
                        f"{g.shape} but the parameter has shape {tuple(p.shape)}"
                    )
            if definition.needs_params:
                param_leaves = leaves

        count = state.count
        count_inc = safe_increment(count)
        values = config.values_at(count)
        per_leaf = _per_leaf_values(config, updates, treedef, len(grads))

        # Scalars cast once per compute dtype, not once per leaf.
        cast_cache: dict[np.dtype, dict[str, Any]] = {}

        def scalars_for(dtype: np.dtype) -> dict[str, Any]:
            if dtype not in cast_cache:
                cast = {k: _cast_value(v, dtype) for k, v in values.items()}
                cast["step"] = count_inc.astype(dtype)
                cast_cache[dtype] = cast
            return cast_cache[dtype]

        # Each leaf's arrays in its compute dtype, read by both phases below.
        dtypes = [_compute_dtype(g.dtype) for g in grads]
        inputs: list[dict[str, Any]] = []
        for i, (g, dtype) in enumerate(zip(grads, dtypes, strict=True)):
            leaf: dict[str, Any] = {
                slot: slot_leaves[slot][i].astype(dtype) if slot in active else None
                for slot in definition.slot_names
            }
            leaf["grad"] = g.astype(dtype)
            if param_leaves:
                leaf["param"] = param_leaves[i].astype(dtype)
            inputs.append(leaf)

        totals: dict[str, Any] = {}
        if definition.global_stats is not None:
            for leaf, dtype in zip(inputs, dtypes, strict=True):
                scalars = scalars_for(dtype)
                leaf_stats = definition.global_stats(
                    leaf["grad"],
                    **{k: leaf[k] for k in definition.stats_inputs},
                    **{k: scalars[k] for k in definition.stats_hyperparams},
                )
                for key, value in leaf_stats.items():
                    totals[key] = totals[key] + value if key in totals else value

        # Inputs every leaf of a compute dtype shares (the same objects), so
        # the runner evaluates the work that depends only on them once.
        shared_cache: dict[np.dtype, dict[str, Any]] = {}

        def shared_for(dtype: np.dtype) -> dict[str, Any]:
            if dtype not in shared_cache:
                scalars = scalars_for(dtype)
                shared = {k: scalars[k] for k in definition.hyperparam_names}
                for name in per_leaf:
                    del shared[name]
                if "step" in definition.reserved:
                    shared["step"] = scalars["step"]
                if "stats" in definition.reserved:
                    shared["stats"] = {k: v.astype(dtype) for k, v in totals.items()}
                shared_cache[dtype] = shared
            return shared_cache[dtype]

        # Traced once per leaf signature; slots stored narrower than the
        # compute dtype are read as stored (see _stored.py).
        run_rule = LeafRunner(definition.fn)
        keys = None
        if config.stochastic_rounding:
            keys = slot_keys(
                state.rounding_key, count, len(grads), len(definition.slots)
            )
        paths: list[str] | None = None
        new_updates = []
        new_slots: dict[str, list[Any]] = {slot: [] for slot in active}
        n_slots = len(definition.slots)
        for i, (g, dtype, leaf) in enumerate(zip(grads, dtypes, inputs, strict=True)):
            own = {slot: leaf[slot] for slot in definition.slot_names}
            if "param" in definition.reserved:
                own["param"] = leaf["param"]
            for name, leaf_values in per_leaf.items():
                own[name] = leaf_values[i]
            storage = [
                _narrower(slot_leaves[slot][i].dtype, dtype) if slot in active else None
                for slot in definition.slot_names
            ]
            rounding = None
            if keys is not None:
                rounding = [
                    _rounding_key(rule_name, updates, i, stored, keys[i, k])
                    for k, stored in enumerate(storage)
                ]
            out, reports = run_rule(
                leaf["grad"], own, shared_for(dtype), storage, rounding
            )
            if reports:
                # Named once per update (not one tree walk per leaf).
                if paths is None:
                    paths = leaf_paths(updates)
                for name, value in reports:
                    report(f"{name}{paths[i]}", value)
            if n_slots == 0:
                out = (out,)
            elif not isinstance(out, tuple) or len(out) != 1 + n_slots:
                raise TypeError(
                    f"{rule_name}: the rule function must return (update, "
                    f"{', '.join(definition.slot_names)}), got {type(out).__name__}"
                    + (f" of length {len(out)}" if isinstance(out, tuple) else "")
                )
            update = jnp.asarray(out[0])
            if update.shape != g.shape:
                raise ValueError(
                    f"{rule_name}: the update for {leaf_path(updates, i)} has shape "
                    f"{update.shape}, expected the gradient's shape {g.shape}"
                )
            new_updates.append(update.astype(g.dtype))
            for slot, value in zip(definition.slot_names, out[1:], strict=True):
                if slot not in active:
                    if value is not None:
                        raise TypeError(
                            f"{rule_name}: slot {slot!r} is absent with these "
                            "hyperparameters, so the rule function must return "
                            "None for it"
                        )
                    continue
                old = slot_leaves[slot][i]
                value = jnp.asarray(value)
                if value.shape != old.shape:
                    raise ValueError(
                        f"{rule_name}: new slot {slot!r} for {leaf_path(updates, i)} "
                        f"has shape {value.shape}, expected {old.shape}"
                    )
                new_slots[slot].append(value.astype(old.dtype))

        extra_fields = {}
        if config.stochastic_rounding:
            extra_fields["rounding_key"] = state.rounding_key
        new_state = state_cls(
            count_inc,
            **{slot: treedef.unflatten(new_slots[slot]) for slot in active},
            **extra_fields,
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
