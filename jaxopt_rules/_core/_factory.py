"""The public face of the core: :func:`rule` and the :class:`RuleFactory` it returns.

:func:`rule` reads a per-leaf function once (``_definition.py``); calling the
resulting :class:`RuleFactory` binds hyperparameters (``_config.py``) and
builds the optax transform (``_transform.py``). The factory takes the public
signature of the rule (positional order, defaults, grouped and ignored
arguments, one dtype argument per slot) and the function's docstring, so a
catalog rule is one decorated function.
"""

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import optax

from jaxopt_rules._core._config import RuleConfig
from jaxopt_rules._core._constraints import Constraint, parse_constraint
from jaxopt_rules._core._definition import (
    ROUNDING_ARGS,
    RuleDefinition,
    Slot,
    read_definition,
)
from jaxopt_rules._core._random import KeySplit
from jaxopt_rules._core._state import all_state_classes
from jaxopt_rules._core._transform import build_transform


RuleFunction = Callable[..., Any]
"""A per-leaf rule: ``fn(grad, *slots, [param], [step], [stats], **hyperparams)``."""

ConstraintSpec = str | Constraint | Callable[[float], bool]

_EMPTY = inspect.Parameter.empty
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


@dataclasses.dataclass(frozen=True)
class PublicSignature:
    """How a factory's public parameters map onto the rule's hyperparameters.

    Attributes:
        positional: the positional-or-keyword parameters, in order, or
            ``None`` for the default order (see :func:`rule`).
        grouped: public parameter name to the hyperparameters it packs.
        ignored: accepted parameters without effect, name to default.
        keyword: the keyword-only parameters to list first, in order.
        storage_args: whether the factory takes the slot dtype and
            stochastic-rounding arguments.
        check: called with the rule's hyperparameters when the factory is
            called; raises on a combination it refuses.
    """

    positional: tuple[str, ...] | None = None
    grouped: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    ignored: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    keyword: tuple[str, ...] = ()
    storage_args: bool = True
    check: Callable[[Mapping[str, Any]], None] | None = None


class RuleFactory:
    """A factory of optax transforms made from one per-leaf rule function.

    Calling it with hyperparameters returns an
    ``optax.GradientTransformationExtraArgs``. Its signature (``inspect``,
    ``help``, ``optax.inject_hyperparams``) lists the rule's hyperparameters,
    one storage-dtype argument per state slot, then (for rules with state)
    ``stochastic_rounding`` and ``rounding_seed``; :func:`rule`'s
    ``positional``, ``grouped`` and ``ignored`` shape it to match another
    library's factory exactly. Its name and docstring are the function's.

    Attributes:
        definition: what the core read from the rule function.
        static_args: names to pass as ``static_args`` to
            ``optax.inject_hyperparams``: structural and per-leaf
            hyperparameters, the dtype arguments and the rounding arguments.
    """

    definition: RuleDefinition
    public: PublicSignature
    static_args: tuple[str, ...]
    __signature__: inspect.Signature

    def __init__(
        self, definition: RuleDefinition, public: PublicSignature | None = None
    ) -> None:
        self.definition = definition
        self.public = public or PublicSignature()
        fn = definition.fn
        self.__name__ = getattr(fn, "__name__", definition.name)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__wrapped__ = fn
        self.__signature__ = _factory_signature(definition, self.public)
        accepted = self.__signature__.parameters
        self.static_args = tuple(
            name
            for name in dict.fromkeys(  # (slots may share a dtype argument)
                (
                    *sorted(definition.static),
                    *sorted(definition.per_leaf),
                    *definition.dtype_args.values(),
                    *ROUNDING_ARGS,
                    *(
                        (definition.seed_arg, definition.seed_alias or "")
                        if definition.takes_key
                        else ()
                    ),
                )
            )
            if name in accepted
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
        arguments = _hyperparameters(self.definition, self.public, bound.arguments)
        return build_transform(RuleConfig.bind(self.definition, arguments))

    def __repr__(self) -> str:
        return f"<rule {self.__name__}{self.__signature__}>"


def _hyperparameters(
    definition: RuleDefinition, public: PublicSignature, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """The public arguments as the rule's: groups unpacked, ignored flags dropped."""
    out = dict(arguments)
    alias = definition.seed_alias if definition.takes_key else None
    if alias is not None:
        value = out.pop(alias)
        if value is not None:
            if out[definition.seed_arg] is not None:
                raise ValueError(
                    f"{definition.name}: pass {definition.seed_arg}= or {alias}=, "
                    "not both"
                )
            warnings.warn(
                f"{definition.name}: {alias}= is deprecated (as in optax); pass "
                f"{definition.seed_arg}=",
                DeprecationWarning,
                stacklevel=3,
            )
            out[definition.seed_arg] = value
    for name in public.ignored:
        value = out.pop(name)
        if value is not None and not isinstance(value, bool):
            raise TypeError(
                f"{definition.name}: {name} must be None or a bool (it is accepted "
                "for compatibility and has no effect on the numbers), got "
                f"{value!r}"
            )
    for name, members in public.grouped.items():
        value = out.pop(name)
        try:
            values = tuple(value)
        except TypeError:
            values = ()
        if len(values) != len(members):
            what = "a pair" if len(members) == 2 else f"a sequence of {len(members)}"
            raise ValueError(
                f"{definition.name}: {name} must be {what} of numbers "
                f"({', '.join(members)}), got {value!r}"
            )
        out.update(zip(members, values, strict=True))
    if not public.storage_args:
        # Slots stored like their parameters, rounded to nearest.
        for arg in definition.dtype_args.values():
            out.setdefault(arg, None)
    if public.check is not None:
        public.check({n: out[n] for n in definition.hyperparam_names})
    return out


def _factory_signature(
    definition: RuleDefinition, public: PublicSignature
) -> inspect.Signature:
    """The factory's signature: hyperparameters, groups, flags, dtypes, rounding."""
    hyper = {p.name: p for p in definition.hyperparams}
    member_of = {m: g for g, members in public.grouped.items() for m in members}
    for group, members in public.grouped.items():
        unknown = [m for m in members if m not in hyper]
        if unknown or not members:
            raise TypeError(
                f"rule {definition.name!r}: group {group!r} packs {unknown or members}"
                ", which are not hyperparameters"
            )
    # Every public parameter, in default order, as keyword-only for now.
    params: dict[str, inspect.Parameter] = {}
    for p in definition.hyperparams:
        group = member_of.get(p.name)
        if group is None:
            params[p.name] = p.replace(kind=_KEYWORD)
        elif group not in params:
            defaults = [hyper[m].default for m in public.grouped[group]]
            params[group] = inspect.Parameter(
                group,
                _KEYWORD,
                default=_EMPTY if _EMPTY in defaults else tuple(defaults),
                annotation="tuple",
            )
    for name, default in public.ignored.items():
        if name in params or name in definition.dtype_args.values():
            raise TypeError(
                f"rule {definition.name!r}: ignored argument {name!r} clashes with a "
                "hyperparameter or a dtype argument"
            )
        params[name] = inspect.Parameter(
            name, _KEYWORD, default=default, annotation="bool | None"
        )
    slot_options = dict(definition.slots)
    for slot, dtype_arg in definition.dtype_args.items() if public.storage_args else ():
        params[dtype_arg] = inspect.Parameter(
            dtype_arg,
            _KEYWORD,
            default=slot_options[slot].dtype_default,
            annotation="jax.typing.DTypeLike | None",
        )
    if definition.slots and public.storage_args:  # (nothing to round without state)
        params["stochastic_rounding"] = inspect.Parameter(
            "stochastic_rounding", _KEYWORD, default=False, annotation=bool
        )
        params["rounding_seed"] = inspect.Parameter(
            "rounding_seed", _KEYWORD, default=None, annotation="int | None"
        )

    if definition.takes_key:
        params[definition.seed_arg] = inspect.Parameter(
            definition.seed_arg,
            _KEYWORD,
            default=definition.seed_default,
            annotation="int | jax.Array | None",
        )
        if definition.seed_alias is not None:
            params[definition.seed_alias] = inspect.Parameter(
                definition.seed_alias, _KEYWORD, default=None, annotation="int | None"
            )

    if public.positional is None:
        # Hyperparameters are positional-or-keyword in declaration order, like
        # optax's aliases, until a required one follows an optional one.
        positional: list[str] = []
        for p in definition.hyperparams:
            name = member_of.get(p.name, p.name)
            if name in positional:
                continue
            if params[name].default is _EMPTY and any(
                params[n].default is not _EMPTY for n in positional
            ):
                break
            positional.append(name)
    else:
        positional = list(public.positional)
        unknown = [n for n in positional if n not in params]
        if unknown or len(set(positional)) != len(positional):
            raise TypeError(
                f"rule {definition.name!r}: positional names {unknown or positional}"
                f"; each must appear once and be one of {list(params)}"
            )
        seen_default = False
        for name in positional:
            if params[name].default is not _EMPTY:
                seen_default = True
            elif seen_default:
                raise TypeError(
                    f"rule {definition.name!r}: positional parameter {name!r} has no "
                    "default but follows one that has"
                )
    unknown = [n for n in public.keyword if n not in params or n in positional]
    if unknown:
        raise TypeError(
            f"rule {definition.name!r}: keyword names {unknown}: each must be a "
            f"parameter of the factory not listed as positional ({list(params)})"
        )
    ordered = [params[n].replace(kind=_POSITIONAL) for n in positional]
    ordered += [params[n] for n in public.keyword]
    ordered += [
        p for n, p in params.items() if n not in positional and n not in public.keyword
    ]
    return inspect.Signature(
        ordered, return_annotation=optax.GradientTransformationExtraArgs
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
    extra_args: Sequence[str] = (),
    positional: Sequence[str] | None = None,
    grouped: Mapping[str, Sequence[str]] | None = None,
    ignored: Mapping[str, Any] | None = None,
    keyword: Sequence[str] = (),
    storage_args: bool = True,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    seed_arg: str = "key",
    seed_default: Any = None,
    key_split: KeySplit | None = None,
    seed_alias: str | None = None,
    per_leaf_is_leaf: Mapping[str, Callable[[Any], bool]] | None = None,
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
    extra_args: Sequence[str] = (),
    positional: Sequence[str] | None = None,
    grouped: Mapping[str, Sequence[str]] | None = None,
    ignored: Mapping[str, Any] | None = None,
    keyword: Sequence[str] = (),
    storage_args: bool = True,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    seed_arg: str = "key",
    seed_default: Any = None,
    key_split: KeySplit | None = None,
    seed_alias: str | None = None,
    per_leaf_is_leaf: Mapping[str, Callable[[Any], bool]] | None = None,
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

    Rules that draw random numbers take the reserved positional ``key``: a
    typed PRNG key of their leaf for this update (draw with
    :func:`random_like` to get noise sharded like the gradient). The state
    then carries ``rng_key`` (raw ``uint32`` key data), seeded by the factory
    argument ``seed_arg`` (an integer, a key, or ``None`` for 0), and split
    at every update by ``key_split``.

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
        extra_args: positional parameters of the function that are not slots
            but extra arguments of ``update`` (``tx.update(grads, state,
            params, value=loss)``): the loss for Polyak step sizes, a Hessian
            estimate. An argument given as a tree shaped like the gradients
            reaches the rule leaf by leaf; any other value (one array) is
            shared by every leaf. ``update`` without it is an error naming it.
        positional: the factory's positional parameters, in order (names of
            hyperparameters, groups, dtype arguments, ignored flags); every
            other parameter is keyword-only. Default: the hyperparameters in
            declaration order, up to the first required one that follows an
            optional one. This is how a catalog rule reproduces another
            library's signature exactly (``adam(learning_rate, b1, b2, eps,
            eps_root, mu_dtype, *, nesterov, nu_dtype)``).
        grouped: factory parameters that pack several hyperparameters, such as
            torch's ``betas=(beta1, beta2)``: ``{"betas": ("beta1", "beta2")}``.
            The group's default is the tuple of its members' defaults; a call
            unpacks it (a wrong length is an error naming it) and each member
            is then checked like any hyperparameter.
        ignored: factory parameters accepted for compatibility that cannot
            change the numbers (torch's ``foreach``, ``fused``): name to
            default. Their values must be ``None`` or a bool.
        keyword: keyword-only parameters of the factory to list first, in
            this order (torch interleaves its flags with hyperparameters).
        storage_args: ``False`` leaves out the ``<slot>_dtype`` and
            stochastic-rounding arguments (a port of a library that has none:
            slots are stored in the parameter's dtype).
        check: ``check(hyperparams)``, called when the factory is called, for
            rules that refuse combinations of values (Nesterov momentum
            without momentum) or values no constraint expresses; it raises
            ``ValueError`` or ``TypeError`` naming the arguments.
        seed_arg: for rules that take ``key``, the factory argument that
            seeds the state's key (optax's noise transforms call it ``key``,
            its DP-SGD ``seed``); listed in ``static_args``.
        seed_default: its default; ``inspect.Parameter.empty`` makes it
            required.
        key_split: ``key_split(state_key, n_leaves) -> (next_key,
            leaf_keys)``; default: ``next, sample = split(key)``, then
            ``split(sample, n_leaves)`` (optax's ``add_noise``).
        per_leaf_is_leaf: per ``per_leaf`` hyperparameter, a predicate on the
            nodes of its tree that are one leaf's value (``None`` meaning
            "not this leaf", a NamedTuple of axes); they are broadcast to the
            parameter subtree below them. Slot shapes (``Slot(shape=fn)``
            with two arguments) see each leaf's value of these per-leaf
            hyperparameters in place of the whole tree (GaLore's dimension
            numbers shape its state).
        seed_alias: a deprecated keyword-only name for the seed argument
            (optax's ``seed=``): used when the seed argument is ``None``, with
            a ``DeprecationWarning``; giving both is an error.

    Returns:
        A :class:`RuleFactory`, or a decorator producing one. The factory
        carries the function's name and docstring, so one decorated
        definition is the public factory.

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
            extra_args=tuple(extra_args),
        )
        if not isinstance(complex_params, bool):
            raise TypeError(
                f"rule {definition.name!r}: complex_params must be True or False"
            )
        definition = dataclasses.replace(
            definition,
            complex_params=complex_params,
            seed_arg=seed_arg,
            seed_default=seed_default,
            key_split=key_split,
            seed_alias=seed_alias,
            per_leaf_is_leaf=dict(per_leaf_is_leaf or {}),
        )
        unknown = set(definition.per_leaf_is_leaf) - set(definition.per_leaf)
        if unknown:
            raise TypeError(
                f"rule {definition.name!r}: per_leaf_is_leaf names {sorted(unknown)}, "
                "which are not per_leaf hyperparameters"
            )
        if definition.takes_key and (
            seed_arg in definition.hyperparam_names
            or seed_arg in definition.dtype_args.values()
            or seed_arg in ROUNDING_ARGS
        ):
            raise TypeError(
                f"rule {definition.name!r}: the seed argument {seed_arg!r} clashes "
                "with a hyperparameter or a dtype or rounding argument; pick "
                "another name with seed_arg="
            )
        public = PublicSignature(
            positional=None if positional is None else tuple(positional),
            grouped={k: tuple(v) for k, v in (grouped or {}).items()},
            ignored=dict(ignored or {}),
            keyword=tuple(keyword),
            storage_args=storage_args,
            check=check,
        )
        all_state_classes(
            definition.name,
            definition.slot_names,
            [option.when is not None for _, option in definition.slots],
            owner=definition.fn.__module__,
            takes_key=definition.takes_key,
        )
        return RuleFactory(definition, public)

    if fn is not None:
        return decorate(fn)
    return decorate
