"""Reading a per-leaf rule function into a :class:`RuleDefinition`.

The function's signature says everything the core needs:

* the first parameter is the gradient of one leaf;
* the other positional parameters are the rule's state slots, except the
  reserved names ``param`` (the parameter leaf), ``step`` (1 for the first
  update) and ``stats`` (global sums from ``global_stats``), and the names
  declared ``extra_args`` (given to ``update`` as keywords);
* keyword-only parameters are the hyperparameters, with their defaults.

A rule that takes ``key`` draws random numbers: the core keeps a PRNG key in
its state (``rng_key``, seeded by a factory argument) and hands every leaf its
own key at every update (``_random.py``).
"""

import dataclasses
import inspect
import keyword
import re
from collections.abc import Callable, Mapping
from typing import Any

from jaxopt_rules._core._constraints import Constraint


RESERVED = ("param", "step", "stats", "key")
"""Positional names with a fixed meaning in a rule function."""

ROUNDING_ARGS = ("stochastic_rounding", "rounding_seed")
"""Keyword-only arguments every factory takes after the slot dtypes."""

STATE_FIELDS = (
    "count",
    "rounding_key",
    "rng_key",
    "hyperparams",
    "hyperparams_states",
    "inner_state",
)
"""Names the core and its wrappers give to state fields besides the slots.

``count``, ``rng_key`` (rules that take ``key``) and ``rounding_key`` are fields
of a rule's state; the others are
those of ``optax.inject_hyperparams`` and wrapper states, which
``optax.tree.get(state, name)`` would confuse with a slot.
"""

HYPERPARAMETER_NAMES = frozenset(
    {
        "learning_rate",
        "lr",
        "momentum",
        "dampening",
        "nesterov",
        "beta",
        "betas",
        "eps",
        "epsilon",
        "eps_root",
        "weight_decay",
        "wd",
        "decay",
        "lr_decay",
        "rho",
        "alpha",
        "maximize",
        "amsgrad",
        "centered",
        "mask",
    }
)
"""Common hyperparameter names; with ``beta<n>`` and ``b<n>`` (see below)."""

_NUMBERED_HYPERPARAMETER = re.compile(r"(beta|b)\d+")


def looks_like_hyperparameter(name: str) -> bool:
    """Whether ``name`` is a usual hyperparameter name (``lr``, ``b1``, ``eps``...).

    Example:
        >>> looks_like_hyperparameter("beta2"), looks_like_hyperparameter("mu")
        (True, False)
    """
    return name in HYPERPARAMETER_NAMES or bool(
        _NUMBERED_HYPERPARAMETER.fullmatch(name)
    )


@dataclasses.dataclass(frozen=True)
class Slot:
    """Options for one state slot of a rule.

    Attributes:
        init: initial value of every element: a number, the name of a
            hyperparameter holding it, or a function of the parameter leaf
            (for instance ``lambda p: p`` to start from a copy of it); a
            function of two arguments also gets the hyperparameter mapping
            (identity blocks sized by a static ``block_size``), with the
            leaf's own value of each ``per_leaf_is_leaf`` hyperparameter, as
            ``shape`` sees it.
        dtype_arg: name of the factory argument that picks the slot's storage
            dtype (default ``"<slot>_dtype"``). With ``None`` passed to it, the
            slot is stored in the parameter's dtype. Slots given the same
            ``dtype_arg`` share one argument (optax's ``ademamix`` stores all
            three moments in its ``mu_dtype``).
        dtype_default: that argument's default (``None``: the parameter's
            dtype; optax's adafactor keeps its momentum in float32 by
            default).
        when: the slot exists only when this holds: the name of a static
            hyperparameter whose value is neither ``None`` nor ``False``, or a
            predicate of the hyperparameter mapping that looks only at static
            properties (``is None``, booleans). Absent slots reach the rule
            function as ``None`` and it must return ``None`` for them.
        shape: the slot's shape as a function of the parameter's shape, for
            factored or matrix-valued state (default: the parameter's shape);
            a function of two arguments also gets the hyperparameter mapping,
            of which it may read static entries only (a ``block_size``
            declared in ``static=``).
        square: the slot accumulates squared magnitudes (a second moment,
            ``|g|**2``): for complex parameters it is stored in the matching
            real dtype, and storage dtypes whose range cannot hold the squares
            of small gradients (float16) are refused.
        per_tree: the slot is one real scalar for the whole parameter tree
            (a step-size estimate, a running loss), not an array per leaf. The
            rule function receives it like a hyperparameter and must compute
            its new value from values every leaf shares (``stats``, ``step``,
            hyperparameters, other per-tree slots); sums over the leaves come
            from ``global_stats``, which may read it too. ``init`` is a
            number, a hyperparameter's name, or a function of the whole
            parameter tree (and of the hyperparameter mapping). Stored in its
            dtype argument, else in the lowest-precision floating dtype of
            the parameters (as optax stores such scalars).
    """

    init: float | str | Callable[..., Any] = 0.0
    dtype_arg: str | None = None
    dtype_default: Any = None
    when: str | Callable[[Mapping[str, Any]], bool] | None = None
    shape: Callable[..., tuple[int, ...]] | None = None
    square: bool = False
    per_tree: bool = False


@dataclasses.dataclass(frozen=True)
class RuleDefinition:
    """Everything the core knows about a rule, read once at decoration time."""

    name: str
    fn: Callable[..., Any]
    slots: tuple[tuple[str, Slot], ...]
    reserved: frozenset[str]
    hyperparams: tuple[inspect.Parameter, ...]
    static: frozenset[str]
    per_leaf: Mapping[str, Any]
    constraints: Mapping[str, Constraint]
    global_stats: Callable[..., Mapping[str, Any]] | None
    stats_inputs: frozenset[str]
    stats_hyperparams: tuple[str, ...]
    complex_params: bool = False
    """Whether the rule's math is defined for complex parameters."""
    extra_args: tuple[str, ...] = ()
    """Positional parameters given by ``update``'s extra arguments."""
    seed_arg: str = "key"
    """For rules that take ``key``: the factory argument seeding the state's key."""
    seed_default: Any = None
    """Its default (``inspect.Parameter.empty``: required); ``None`` is seed 0."""
    seed_alias: str | None = None
    """A deprecated keyword-only name for the seed (optax's ``seed=``)."""
    per_leaf_is_leaf: Mapping[str, Callable[[Any], bool]] = dataclasses.field(
        default_factory=dict
    )
    """Per per-leaf hyperparameter: which nodes of its tree are one leaf's
    value (``None`` and dimension-number NamedTuples, for instance)."""
    key_split: Callable[[Any, int], tuple[Any, Any]] | None = None
    """``key_split(state_key, n_leaves) -> (next_state_key, leaf_keys)`` on
    typed keys; ``None``: ``_random.split_then_per_leaf`` (optax's ``add_noise``)."""

    @property
    def takes_key(self) -> bool:
        """Whether the rule draws random numbers (its function takes ``key``)."""
        return "key" in self.reserved

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Names of all declared slots, in signature order."""
        return tuple(name for name, _ in self.slots)

    @property
    def hyperparam_names(self) -> tuple[str, ...]:
        """Names of the keyword-only hyperparameters, in signature order."""
        return tuple(p.name for p in self.hyperparams)

    @property
    def dtype_args(self) -> dict[str, str]:
        """Maps each slot to the name of its dtype argument."""
        return {name: slot.dtype_arg or f"{name}_dtype" for name, slot in self.slots}

    @property
    def leaf_slot_names(self) -> tuple[str, ...]:
        """The slots holding one array per parameter leaf, in order."""
        return tuple(name for name, slot in self.slots if not slot.per_tree)

    @property
    def tree_slot_names(self) -> tuple[str, ...]:
        """The slots holding one scalar for the whole tree (``per_tree``)."""
        return tuple(name for name, slot in self.slots if slot.per_tree)

    @property
    def needs_params(self) -> bool:
        """Whether ``update`` must be given the parameters."""
        return "param" in self.reserved or "param" in self.stats_inputs


def _split_signature(
    fn: Callable[..., Any], what: str
) -> tuple[str, list[str], list[inspect.Parameter]]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise TypeError(f"cannot read the signature of {what} {fn!r}") from error
    positional: list[str] = []
    keyword: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"{what} {fn.__name__!r} may not take *args or **kwargs: the core "
                "reads slots and hyperparameters from named parameters"
            )
        if parameter.kind is parameter.KEYWORD_ONLY:
            keyword.append(parameter)
        else:
            if parameter.default is not parameter.empty:
                raise TypeError(
                    f"{what} {fn.__name__!r}: positional parameter "
                    f"{parameter.name!r} has a default; hyperparameters must be "
                    "keyword-only (after a bare '*')"
                )
            positional.append(parameter.name)
    if not positional:
        raise TypeError(
            f"{what} {fn.__name__!r} must take the gradient leaf as its first "
            "positional parameter"
        )
    return positional[0], positional[1:], keyword


def _check_slot_names(
    rule_name: str, slot_names: list[str], configured: Mapping[str, Slot]
) -> None:
    """Refuses slot names the state cannot hold, and positional hyperparameters."""
    for slot in slot_names:
        if slot in STATE_FIELDS:
            raise TypeError(
                f"rule {rule_name!r}: slot {slot!r} is named like a field the core "
                f"puts in the state besides the slots ({', '.join(STATE_FIELDS)}); "
                "rename it"
            )
        if slot.startswith("_"):
            raise TypeError(
                f"rule {rule_name!r}: slot {slot!r} starts with an underscore, "
                "which a state field (a NamedTuple field) cannot; rename it"
            )
        if looks_like_hyperparameter(slot) and slot not in configured:
            raise TypeError(
                f"rule {rule_name!r}: positional parameter {slot!r} looks like a "
                "hyperparameter, but positional parameters after the gradient "
                "are state slots (it would be kept in the state, start at 0 and "
                f"never be set by the factory). Make it keyword-only, after a "
                f"bare '*': def {rule_name}(grad, ..., *, {slot}, ...). If it "
                f"really is a state slot, declare it: slots={{{slot!r}: Slot()}}."
            )


def _check_dtype_args(
    rule_name: str, slot_options: tuple[tuple[str, Slot], ...], hyper_names: list[str]
) -> None:
    """Each slot's dtype argument: a fresh identifier; shared ones agree."""
    owners: dict[str, tuple[str, Slot]] = {}
    for slot, option in slot_options:
        arg = option.dtype_arg or f"{slot}_dtype"
        if not arg.isidentifier() or keyword.iskeyword(arg):
            raise TypeError(
                f"rule {rule_name!r}: slot {slot!r} has dtype argument {arg!r}, "
                "which is not a valid Python parameter name"
            )
        if arg in hyper_names:
            raise TypeError(
                f"rule {rule_name!r}: the dtype argument {arg!r} of slot {slot!r} "
                f"clashes with the hyperparameter {arg!r}; rename the "
                "hyperparameter, or give the slot another one with "
                "Slot(dtype_arg=...)"
            )
        if arg in ROUNDING_ARGS:
            raise TypeError(
                f"rule {rule_name!r}: the dtype argument {arg!r} of slot {slot!r} "
                "is an argument of every rule factory (stochastic rounding); "
                "pick another name with Slot(dtype_arg=...)"
            )
        if arg in owners:
            other, other_option = owners[arg]
            if other_option.dtype_default != option.dtype_default:
                raise TypeError(
                    f"rule {rule_name!r}: slots {other!r} and {slot!r} share the "
                    f"dtype argument {arg!r} with different defaults "
                    f"({other_option.dtype_default!r} and "
                    f"{option.dtype_default!r}); give them one default, or one "
                    "slot another argument with Slot(dtype_arg=...)"
                )
            continue
        owners[arg] = (slot, option)


def read_definition(
    fn: Callable[..., Any],
    *,
    name: str | None,
    slots: Mapping[str, Slot],
    static: tuple[str, ...],
    per_leaf: Mapping[str, Any],
    constraints: Mapping[str, Constraint],
    global_stats: Callable[..., Mapping[str, Any]] | None,
    extra_args: tuple[str, ...] = (),
) -> RuleDefinition:
    """Validates a rule function and its options; raises TypeError on misuse."""
    rule_name = name or fn.__name__
    _, positional, keyword = _split_signature(fn, "rule function")
    for extra in extra_args:
        if extra not in positional or extra in RESERVED:
            raise TypeError(
                f"rule {rule_name!r}: extra argument {extra!r} must be a positional "
                "parameter of the rule function (after the gradient), not one of "
                f"{RESERVED}"
            )
    slot_names = [p for p in positional if p not in RESERVED and p not in extra_args]
    reserved = frozenset(p for p in positional if p in RESERVED)
    hyper_names = [p.name for p in keyword]

    unknown_slots = set(slots) - set(slot_names)
    if unknown_slots:
        raise TypeError(
            f"rule {rule_name!r}: slots {sorted(unknown_slots)} are configured but "
            f"are not positional parameters of the rule function (its slots: "
            f"{slot_names})"
        )
    _check_slot_names(rule_name, slot_names, slots)
    if "stats" in reserved and global_stats is None:
        raise TypeError(
            f"rule {rule_name!r} takes 'stats' but no global_stats function was given"
        )
    slot_options = tuple((s, slots.get(s, Slot())) for s in slot_names)
    for slot_name, option in slot_options:
        if isinstance(option.init, str) and option.init not in hyper_names:
            raise TypeError(
                f"rule {rule_name!r}: slot {slot_name!r} is initialised from "
                f"{option.init!r}, which is not a hyperparameter"
            )
        if option.per_tree and (option.shape is not None or option.square):
            raise TypeError(
                f"rule {rule_name!r}: slot {slot_name!r} is per_tree (one scalar "
                "for the whole tree), so it takes no shape= and no square="
            )
        if isinstance(option.when, str) and option.when not in hyper_names:
            raise TypeError(
                f"rule {rule_name!r}: slot {slot_name!r} depends on "
                f"{option.when!r}, which is not a hyperparameter"
            )
    clash_rounding = set(hyper_names) & set(ROUNDING_ARGS)
    if clash_rounding:
        raise TypeError(
            f"rule {rule_name!r}: {sorted(clash_rounding)} are arguments of every "
            "rule factory (stochastic rounding of bfloat16 slots); rename the "
            "hyperparameter"
        )
    _check_dtype_args(rule_name, slot_options, hyper_names)
    for names, label in (
        (static, "static"),
        (per_leaf, "per_leaf"),
        (constraints, "constraints"),
    ):
        missing = set(names) - set(hyper_names)
        if missing:
            raise TypeError(
                f"rule {rule_name!r}: {label} names {sorted(missing)} that are not "
                f"hyperparameters (keyword-only parameters: {hyper_names})"
            )

    stats_inputs: frozenset[str] = frozenset()
    stats_hyperparams: tuple[str, ...] = ()
    if global_stats is not None:
        _, stats_positional, stats_keyword = _split_signature(
            global_stats, "global_stats function"
        )
        allowed = {"param", "step", *slot_names}
        bad = set(stats_positional) - allowed
        if bad:
            raise TypeError(
                f"rule {rule_name!r}: global_stats takes {sorted(bad)}; it may take "
                f"the gradient, 'param', 'step' and the slots {slot_names}"
            )
        stats_inputs = frozenset(stats_positional)
        stats_hyperparams = tuple(p.name for p in stats_keyword)
        unknown = set(stats_hyperparams) - set(hyper_names)
        if unknown:
            raise TypeError(
                f"rule {rule_name!r}: global_stats takes {sorted(unknown)}, which "
                "are not hyperparameters of the rule"
            )

    return RuleDefinition(
        name=rule_name,
        fn=fn,
        slots=slot_options,
        reserved=reserved,
        hyperparams=tuple(keyword),
        static=frozenset(static),
        per_leaf=dict(per_leaf),
        constraints=dict(constraints),
        global_stats=global_stats,
        stats_inputs=stats_inputs,
        stats_hyperparams=stats_hyperparams,
        extra_args=tuple(extra_args),
    )
