"""The rule core: one plain per-leaf function in, an optax transform factory out.

:func:`rule` reads the function once (see ``_definition.py``); calling the
resulting :class:`RuleFactory` binds hyperparameters (``_config.py``) and builds
an ``optax.GradientTransformationExtraArgs`` whose ``init`` and ``update`` do,
for every rule, what a hand-written optax transform must each do by itself:
NamedTuple state with a saturating int32 ``count``, tree mapping that skips
``None`` and ``optax.MaskedNode`` holes, schedules, the dtype policy, errors
that name the offending leaf, and init through tree maps only.
"""

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core._config import RuleConfig, check_per_leaf_tree
from jaxopt_rules._core._constraints import Constraint, parse_constraint
from jaxopt_rules._core._definition import (
    ROUNDING_ARGS,
    RuleDefinition,
    Slot,
    read_definition,
)
from jaxopt_rules._core._report import report
from jaxopt_rules._core._rounding import new_state_key, slot_keys
from jaxopt_rules._core._state import (
    all_state_classes,
    safe_increment,
    state_class,
)
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
    complex_params: bool = False,
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
    complex_params: bool = False,
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
    * complex parameters, for rules declared ``complex_params=True``: slots
      marked ``Slot(square=True)`` are stored real (``|g|**2``, see
      :func:`abs_sq`), other slots complex of the parameter's precision (or
      of their dtype argument's: ``float32`` stores ``complex64``; there is no
      complex bfloat16, so stochastic rounding only ever applies to the real
      slots); other rules refuse complex leaves by name;
    * integer, boolean and ``float0`` leaves left untouched, as optax does
      (zero slots of their dtype, a zero update), and Python numbers taken as
      arrays;
    * init through tree maps only, so ``jax.eval_shape`` and
      ``optax.tree_utils.tree_map_params`` work, with state sharded like the
      parameters under ``jax.jit``; ``init`` of ``jax.ShapeDtypeStruct``
      leaves returns the abstract state;
    * errors that name the problem: params missing, a gradient tree that does
      not match the state (with the path), unsupported leaves, hyperparameters
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
        complex_params: the rule's math holds for complex parameters (it
            computes squared magnitudes with :func:`abs_sq`, marks second
            moments ``Slot(square=True)``). Without it, complex leaves are
            refused with an error naming the rule and the leaf.

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
        if not isinstance(complex_params, bool):
            raise TypeError(
                f"rule {definition.name!r}: complex_params must be True or False"
            )
        definition = dataclasses.replace(definition, complex_params=complex_params)
        all_state_classes(
            definition.name,
            definition.slot_names,
            [option.when is not None for _, option in definition.slots],
            owner=definition.fn.__module__,
        )
        return RuleFactory(definition)

    if fn is not None:
        return decorate(fn)
    return decorate


# ---------------------------------------------------------------------------
# The transform


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


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


_INERT, _REAL, _COMPLEX = "inert", "real", "complex"

_COMPLEX_OF = {
    np.dtype(np.float32): np.dtype(np.complex64),
    np.dtype(np.float64): np.dtype(np.complex128),
}


def _as_leaf(leaf: Any) -> Any:
    """Python numbers as arrays (frameworks put them in parameter trees)."""
    if isinstance(leaf, bool | int | float | complex):
        return jnp.asarray(leaf)
    return leaf


def _real_dtype(dtype: np.dtype) -> np.dtype:
    """The real dtype of the same precision (``float32`` for ``complex64``)."""
    return np.dtype(jnp.finfo(dtype).dtype)


def _leaf_kind(
    rule: str, complex_ok: bool, tree: Any, index: int, leaf: Any, what: str
) -> str:
    """How the core treats a leaf: a real or complex float, or inert.

    Integer, boolean and ``float0`` leaves (step counters, integer buffers and
    their gradients) are *inert*, as in optax: they get slots of zeros of
    their own dtype, and a zero update.
    """
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        raise TypeError(
            f"{rule}: {what} at {leaf_path(tree, index)} is a "
            f"{type(leaf).__name__}, not an array"
        )
    dtype = np.dtype(dtype)
    if (
        dtype == jax.dtypes.float0
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.bool_)
    ):
        return _INERT
    if jnp.issubdtype(dtype, jnp.complexfloating):
        if not complex_ok:
            raise TypeError(
                f"{rule}: {what} at {leaf_path(tree, index)} is complex ({dtype}), "
                f"and the {rule} rule is not defined for complex parameters. Use a "
                "rule that supports them (sgd, adam, adamw, adagrad, rmsprop, lamb, "
                "normalized_sgd), or split the parameter into real and imaginary "
                "parts."
            )
        return _COMPLEX
    if jnp.issubdtype(dtype, jnp.floating):
        if jnp.finfo(dtype).bits < 16:
            raise TypeError(
                f"{rule}: {what} at {leaf_path(tree, index)} has dtype {dtype}; "
                "8-bit float parameters are not supported (their steps would "
                "round to zero): keep the parameters in bfloat16 or float32 "
                "and cast them for the forward pass."
            )
        return _REAL
    raise TypeError(
        f"{rule}: {what} at {leaf_path(tree, index)} has dtype {dtype}; rules work "
        "on floating-point leaves (float16, bfloat16, float32, float64, complex64, "
        "complex128) and leave integer and boolean leaves untouched. Exclude other "
        "leaves with optax.masked or optax.partition."
    )


def _storage_dtype(
    rule: str,
    slot: str,
    option: Slot,
    dtype_arg: str,
    chosen: np.dtype | None,
    param: Any,
    tree: Any,
    index: int,
) -> np.dtype:
    """The dtype a slot of this parameter is stored in.

    Real parameters: the slot's dtype argument, else the parameter's dtype,
    except that squared magnitudes of float16 parameters are kept in float32
    (float16's range loses the squares of gradients below about 5e-3).
    Complex parameters: slots of squared magnitudes (``Slot(square=True)``)
    are real (the argument's dtype, else the parameter's real dtype); other
    slots are complex, of the argument's precision (``float32`` stores
    ``complex64``) or else of the parameter's dtype.
    """
    dtype = np.dtype(param.dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        if chosen is None and option.square and dtype == np.float16:
            # Squares of gradients below ~5e-3 underflow in float16 (the first
            # Adam step would be -lr / eps): keep them in float32 instead.
            return np.dtype(np.float32)
        return chosen if chosen is not None else dtype
    if option.square:
        return chosen if chosen is not None else _real_dtype(dtype)
    if chosen is None:
        return dtype
    if chosen not in _COMPLEX_OF:
        raise TypeError(
            f"{rule}: {dtype_arg}={chosen} cannot store slot {slot!r} of the complex "
            f"parameter at {leaf_path(tree, index)}: there is no complex {chosen}. "
            "Use float32 or float64 (stored as complex64 or complex128)."
        )
    return _COMPLEX_OF[chosen]


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
        if callable(value):  # (a tree given directly was checked at bind)
            tree = value(updates)
            check_per_leaf_tree(definition, name, tree)
        else:
            tree = value
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
    state_cls = state_class(
        rule_name,
        active,
        definition.slot_names,
        extra,
        owner=definition.fn.__module__,
    )

    dtype_args = definition.dtype_args
    complex_ok = definition.complex_params

    def init_slot(
        slot: str, values: Mapping[str, Any], p: Any, params: Any, i: int
    ) -> Any:
        option = options[slot]
        storage = _storage_dtype(
            rule_name,
            slot,
            option,
            dtype_args[slot],
            config.slot_dtypes[slot],
            p,
            params,
            i,
        )
        if callable(option.init):
            value = jnp.asarray(option.init(p))
            if jnp.iscomplexobj(value) and not jnp.issubdtype(
                storage, jnp.complexfloating
            ):
                raise TypeError(
                    f"{rule_name}: the initial value of slot {slot!r} is complex "
                    f"at {leaf_path(params, i)}, but the slot holds squared "
                    "magnitudes and is real"
                )
            return jnp.broadcast_to(value, _slot_shape(option, p.shape)).astype(storage)
        value = values[option.init] if isinstance(option.init, str) else option.init
        shape = _slot_shape(option, p.shape)
        if tuple(shape) != tuple(p.shape):
            return jnp.full(shape, value, storage)
        # Shaped like the parameter (always, or for this leaf): sharded like it.
        return fill_like(p, value, storage)

    def init_fn(params: optax.Params) -> Any:
        leaves = jax.tree.leaves(params)
        if any(isinstance(p, jax.ShapeDtypeStruct) for p in leaves):
            # Abstract parameters give abstract state (as jax.eval_shape does).
            return jax.eval_shape(init_fn, params)
        params = jax.tree.map(_as_leaf, params)
        param_leaves, treedef = jax.tree.flatten(params)
        kinds = [
            _leaf_kind(rule_name, complex_ok, params, i, p, "parameter")
            for i, p in enumerate(param_leaves)
        ]
        count = jnp.zeros([], jnp.int32)
        values = config.values_at(count)
        slots = {
            slot: treedef.unflatten(
                [
                    # Inert (integer) leaves: zeros of their own dtype, as optax.
                    jnp.zeros_like(p)
                    if kind == _INERT
                    else init_slot(slot, values, p, params, i)
                    for i, (p, kind) in enumerate(zip(param_leaves, kinds, strict=True))
                ]
            )
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
        if definition.needs_params and params is None and jax.tree.leaves(updates):
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
        if type(state) is not state_cls and (
            type(state).__name__ != state_cls.__name__
            or tuple(state._fields) != tuple(state_cls._fields)
        ):
            raise TypeError(
                f"{rule_name}: expected a {state_cls.__name__}"
                f"{tuple(state_cls._fields)} (the state returned by this "
                f"transform's init), got a {type(state).__name__}"
                f"{tuple(state._fields)}: a state from another rule, or from "
                "this rule with other hyperparameters?"
            )
        grads, treedef = jax.tree.flatten(updates)
        grads = [_as_leaf(g) for g in grads]
        kinds = [
            _leaf_kind(rule_name, complex_ok, updates, i, g, "gradient")
            for i, g in enumerate(grads)
        ]

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
            leaves = [_as_leaf(s) for s in treedef.flatten_up_to(tree)]
            for i, (g, s) in enumerate(zip(grads, leaves, strict=True)):
                if not jnp.issubdtype(s.dtype, jnp.inexact):
                    kinds[i] = _INERT
                if kinds[i] == _INERT:
                    continue
                slot_complex = jnp.issubdtype(s.dtype, jnp.complexfloating)
                if options[slot].square and slot_complex:
                    raise TypeError(
                        f"{rule_name}: state slot {slot!r} at "
                        f"{leaf_path(updates, i)} is complex ({s.dtype}), but it "
                        "holds squared magnitudes and must be real (a state "
                        "converted from optax, which stores them complex? use "
                        "jaxopt_rules.from_optax)"
                    )
                if kinds[i] == _COMPLEX and not options[slot].square:
                    if not slot_complex:
                        raise ValueError(
                            f"{rule_name}: the gradient at {leaf_path(updates, i)} "
                            f"is complex but its state slot {slot!r} is {s.dtype}: "
                            "initialise the state with the complex parameters"
                        )
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
            leaves = [_as_leaf(p) for p in treedef.flatten_up_to(params)]
            for i, (g, p) in enumerate(zip(grads, leaves, strict=True)):
                if (
                    _leaf_kind(rule_name, complex_ok, params, i, p, "parameter")
                    == _INERT
                ):
                    kinds[i] = _INERT
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
            dtype = _real_dtype(dtype)  # hyperparameters are real
            if dtype not in cast_cache:
                cast = {k: _cast_value(v, dtype) for k, v in values.items()}
                cast["step"] = count_inc.astype(dtype)
                cast_cache[dtype] = cast
            return cast_cache[dtype]

        # Each leaf's arrays in its compute dtype, read by both phases below.
        dtypes = [
            _compute_dtype(g.dtype) if kind != _INERT else np.dtype(np.float32)
            for g, kind in zip(grads, kinds, strict=True)
        ]
        inputs: list[dict[str, Any]] = []
        for i, (g, dtype) in enumerate(zip(grads, dtypes, strict=True)):
            if kinds[i] == _INERT:
                inputs.append({})
                continue
            real = _real_dtype(dtype)
            leaf: dict[str, Any] = {
                slot: slot_leaves[slot][i].astype(
                    real if options[slot].square else dtype
                )
                if slot in active
                else None
                for slot in definition.slot_names
            }
            leaf["grad"] = g.astype(dtype)
            if param_leaves:
                leaf["param"] = param_leaves[i].astype(dtype)
            inputs.append(leaf)

        totals: dict[str, Any] = {}
        if definition.global_stats is not None:
            for leaf, dtype, kind in zip(inputs, dtypes, kinds, strict=True):
                if kind == _INERT:
                    continue
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
                    real = _real_dtype(dtype)
                    shared["stats"] = {
                        k: jnp.real(v).astype(real) for k, v in totals.items()
                    }
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
            if kinds[i] == _INERT:
                # Integer and boolean leaves: a zero update (float0 gradients
                # pass through), slots unchanged.
                inert = g if g.dtype == jax.dtypes.float0 else jnp.zeros_like(g)
                new_updates.append(inert)
                for slot in active:
                    new_slots[slot].append(slot_leaves[slot][i])
                continue
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
            if out is None:
                raise TypeError(
                    f"{rule_name}: the rule function returned None; it must return "
                    + (
                        f"(update, {', '.join(definition.slot_names)})"
                        if n_slots
                        else "the update"
                    )
                )
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
            if jnp.iscomplexobj(update) and not jnp.iscomplexobj(g):
                raise TypeError(
                    f"{rule_name}: the update for the real gradient at "
                    f"{leaf_path(updates, i)} is complex ({update.dtype})"
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
                if jnp.iscomplexobj(value) and not jnp.iscomplexobj(old):
                    raise TypeError(
                        f"{rule_name}: the rule returned a complex value for slot "
                        f"{slot!r} at {leaf_path(updates, i)}, which is stored "
                        f"real ({old.dtype})"
                        + (
                            "; it holds squared magnitudes: compute them with "
                            "jaxopt_rules.abs_sq(grad), not grad**2"
                            if options[slot].square
                            else ""
                        )
                    )
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
