"""Binding a factory call's arguments into a checked :class:`RuleConfig`.

Hyperparameters fall into five kinds:

* *dtype arguments* (one per slot): ``None`` or a floating dtype of 16 bits
  or more; a slot marked ``Slot(square=True)`` (it holds squared gradients)
  also refuses dtypes whose range is narrower than float32's (float16);
* the *rounding arguments* ``stochastic_rounding`` (a bool) and
  ``rounding_seed`` (an int in ``[0, 2**32)``), which every factory takes;
* *static* ones (declared, plus every ``bool``): fixed at trace time;
* *per-leaf* ones (such as a weight-decay ``mask``): a pytree prefix of the
  gradients, or a function of the gradients returning one, read at trace time;
  when the rule's default for them is a bool, each leaf's value must be a
  concrete bool (:func:`check_per_leaf_tree`);
* *numeric* ones: a number, an array scalar (possibly traced) or a schedule,
  a callable of the step count evaluated at every update, whose result must be
  a numeric scalar. ``None``, strings and other values are refused unless the
  rule function admits them (see ``_constraints.check_value``).

Nothing here branches on a numeric value unless it is a concrete number, so the
same factory works under ``optax.inject_hyperparams``.
"""

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.tree_util import keystr

from jaxopt_rules._core._constraints import (
    check_schedule_value,
    check_value,
    concrete_scalar,
    describe,
    is_numeric,
)
from jaxopt_rules._core._definition import ROUNDING_ARGS, RuleDefinition
from jaxopt_rules._core._random import check_seed


SEED_LIMIT = 2**32
"""Rounding seeds lie in ``[0, SEED_LIMIT)``: the 32 bits every JAX setting keeps.

``jax.random.key`` keeps only the low 32 bits of a seed when 64-bit mode is
off (so seeds 0 and 2**32 give the same key) and overflows above 2**63.
"""

_FLOAT32_TINY = float(jnp.finfo(jnp.float32).smallest_normal)


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | np.generic)


def _canonical_dtype(
    rule: str, arg: str, value: Any, slot: str, square: bool
) -> np.dtype | None:
    if value is None:
        return None
    if _is_array(value):
        raise TypeError(
            f"{rule}: {arg} must be a dtype such as 'bfloat16', got an array. "
            f"With optax.inject_hyperparams, pass static_args=({arg!r},) so that "
            "the dtype is not turned into a schedule or an array."
        )
    try:
        dtype = jnp.dtype(value)
    except TypeError as error:
        raise TypeError(f"{rule}: {arg}={value!r} is not a dtype") from error
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{rule}: {arg}={dtype} is not supported; state slots need a "
            "floating dtype (float32, bfloat16, float16, float64)"
        )
    check_storage_dtype(rule, arg, dtype, slot, square)
    return dtype


def check_storage_dtype(
    rule: str, arg: str, dtype: np.dtype, slot: str, square: bool
) -> None:
    """Refuses floating storage dtypes that cannot hold a slot's values.

    * Floats of fewer than 16 bits (the float8, float6 and float4 types) for
      any slot: elementwise they round small moments to zero and overflow on
      large ones. ``quantized_state`` is the way to 8-bit state.
    * For a slot marked ``Slot(square=True)``, any dtype whose smallest normal
      number is above float32's (float16: 6.1e-05): the squares of small
      gradients underflow. bfloat16 has float32's range.

    Args:
        rule: the rule's name, for messages.
        arg: the dtype argument's name.
        dtype: the floating dtype it was given.
        slot: the slot it stores.
        square: whether the slot accumulates squared magnitudes.

    Raises:
        TypeError: an 8-bit (or narrower) float.
        ValueError: a low-range dtype for a squared quantity.

    Example:
        >>> import jax.numpy as jnp
        >>> check_storage_dtype("adam", "nu_dtype", jnp.dtype("bfloat16"), "nu", True)
        >>> check_storage_dtype("adam", "nu_dtype", jnp.dtype("float16"), "nu", True)
        Traceback (most recent call last):
        ...
        ValueError: adam: nu_dtype=float16 cannot store slot 'nu', ...
    """
    info = jnp.finfo(dtype)
    if info.bits < 16:
        raise TypeError(
            f"{rule}: {arg}={dtype} is not supported: {info.bits}-bit floats "
            f"cannot hold optimizer state element by element (smallest "
            f"{float(info.smallest_subnormal):.2g}, largest {float(info.max):.3g}: "
            "small moments round to 0, large ones overflow). For 8-bit state "
            "wrap the transform in jaxopt_rules.quantized_state (block-wise "
            "scaled); otherwise store the slot in bfloat16."
        )
    tiny = float(info.smallest_normal)
    if square and tiny > _FLOAT32_TINY:
        raise ValueError(
            f"{rule}: {arg}={dtype} cannot store slot {slot!r}, which "
            f"accumulates squared gradients: {dtype}'s smallest normal number "
            f"is {tiny:.2g} (float32's: {_FLOAT32_TINY:.2g}), so the squares "
            "of small gradients underflow to 0 and the step is divided by eps "
            "alone (Adam with |g| = 1e-3 and lr = 1e-3: a first step of -100 "
            "instead of -0.001). Use bfloat16 (float32's range in 16 bits) or "
            "float32."
        )


def _check_seed(rule: str, seed: Any) -> None:
    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer | jax.Array | np.ndarray)
        or np.ndim(seed) != 0
        or not jnp.issubdtype(jnp.result_type(seed), jnp.integer)
    ):
        raise TypeError(f"{rule}: rounding_seed must be an integer, got {seed!r}")
    if isinstance(seed, Tracer):
        return
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(
            f"{rule}: rounding_seed={int(seed)} does not fit the rounding key, "
            "whose seed is 32 bits; pass an integer in [0, 2**32)"
        )


def _per_leaf_problem(value: Any) -> str | None:
    """Why ``value`` is not one leaf's bool, or None if it is one."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer) and value in (0, 1):
        return None
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        shape = tuple(np.shape(value))
        if int(np.prod(shape)) != 1:
            return (
                f"is an array of shape {shape}: it selects whole leaves (one "
                "bool per leaf, the leaves of a pytree prefix of the params, as "
                "in optax.masked), not elements. To treat some elements of a "
                "parameter differently, split it into separate leaves."
            )
        if isinstance(value, Tracer):
            return (
                "is a traced value (a jax array under jit or vmap, or an array "
                "that optax.inject_hyperparams turned into a hyperparameter); it "
                "decides which leaves the rule treats how, so it must be a "
                "concrete bool. Build it outside jit from Python bools, or use "
                "jaxopt_rules.inject_hyperparams, which keeps it static (with "
                "optax.inject_hyperparams, pass static_args naming it)."
            )
        if jnp.issubdtype(value.dtype, jnp.bool_):
            return None
    return f"must be a bool, got {describe(value)}"


def check_per_leaf_tree(definition: RuleDefinition, name: str, tree: Any) -> None:
    """Checks the value of a per-leaf hyperparameter before it is broadcast.

    Per-leaf hyperparameters whose default is a bool (a weight-decay
    ``mask``) take one concrete bool per leaf of a pytree prefix of the
    gradients, as ``optax.masked`` does: an array of booleans given per
    element, or a traced value, is refused, naming the leaf. Other per-leaf
    hyperparameters are not checked here. ``None`` entries (empty subtrees)
    are skipped.

    Call it on the mask itself, or on what a mask function returned.

    Args:
        definition: the rule.
        name: the per-leaf hyperparameter.
        tree: its value (a pytree prefix of the gradients), not a callable.

    Raises:
        ValueError: a leaf given per element.
        TypeError: a traced leaf, or one that is not a bool.

    Example:
        >>> import numpy as np
        >>> import jaxopt_rules as jr
        >>> definition = jr.adamw.definition
        >>> check_per_leaf_tree(definition, "mask", {"w": True, "b": False})
        >>> check_per_leaf_tree(definition, "mask", {"w": np.ones(3, bool)})
        Traceback (most recent call last):
        ...
        ValueError: adamw: mask['w'] is an array of shape (3,): ...
    """
    if not isinstance(definition.per_leaf.get(name), bool):
        return
    for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
        problem = _per_leaf_problem(value)
        if problem is None:
            continue
        where = f"{name}{keystr(path)}"
        per_element = problem.startswith("is an array of shape")
        error = ValueError if per_element else TypeError
        raise error(f"{definition.name}: {where} {problem}")


def _check_constraint(definition: RuleDefinition, name: str, value: Any) -> None:
    """Refuses a concrete value outside the hyperparameter's constraint."""
    constraint = definition.constraints.get(name)
    scalar = concrete_scalar(value)
    if constraint is not None and scalar is not None:
        message = constraint.violation(name, scalar)
        if message is not None:
            raise ValueError(f"{definition.name}: {message}")


@dataclasses.dataclass(frozen=True)
class RuleConfig:
    """A rule's bound hyperparameters and the slot settings they imply."""

    definition: RuleDefinition
    arguments: Mapping[str, Any]
    slot_dtypes: Mapping[str, np.dtype | None]
    active_slots: tuple[str, ...]
    schedules: frozenset[str]
    stochastic_rounding: bool = False
    rounding_seed: Any = 0
    rng_seed: Any = None
    """For rules that take ``key``: the seed argument (``_random.initial_key``)."""

    @classmethod
    def bind(
        cls, definition: RuleDefinition, arguments: Mapping[str, Any]
    ) -> "RuleConfig":
        """Checks ``arguments`` (all of the factory's, defaults applied)."""
        rule = definition.name
        dtype_args = definition.dtype_args
        options = dict(definition.slots)
        slot_dtypes = {
            slot: _canonical_dtype(
                rule, arg, arguments[arg], slot, options[slot].square
            )
            for slot, arg in dtype_args.items()
        }
        stochastic = arguments.get("stochastic_rounding", False)
        if not isinstance(stochastic, bool):
            raise TypeError(
                f"{rule}: stochastic_rounding must be True or False, got "
                f"{stochastic!r}. With optax.inject_hyperparams, pass "
                f"static_args={ROUNDING_ARGS!r}."
            )
        seed = arguments.get("rounding_seed")
        if seed is None:
            seed = 0
        else:
            _check_seed(rule, seed)
        if stochastic:
            for slot, dtype in slot_dtypes.items():
                if (
                    dtype is not None
                    and dtype != jnp.bfloat16
                    and (jnp.finfo(dtype).bits < 32)
                ):
                    raise ValueError(
                        f"{rule}: stochastic_rounding stores to bfloat16, but "
                        f"{dtype_args[slot]}={dtype}; use bfloat16 or a 32/64-bit "
                        "dtype for that slot"
                    )
        hyper = {name: arguments[name] for name in definition.hyperparam_names}
        parameters = {p.name: p for p in definition.hyperparams}
        schedules: set[str] = set()
        for name, value in hyper.items():
            if name in definition.per_leaf:
                if not callable(value):
                    check_per_leaf_tree(definition, name, value)
                continue
            if name in definition.static:
                if _is_array(value):
                    raise TypeError(
                        f"{rule}: {name} is structural and must be a Python value, "
                        f"got an array. With optax.inject_hyperparams, pass "
                        f"static_args={tuple(sorted(definition.static))!r}."
                    )
                _check_constraint(definition, name, value)
                continue
            check_value(rule, name, parameters[name], value)
            if isinstance(value, bool) or not (callable(value) or is_numeric(value)):
                continue  # a bool, or what the signature admits (None, a str)
            if callable(value):
                schedules.add(name)
                continue
            if _is_array(value) and np.ndim(value) != 0:
                raise ValueError(
                    f"{rule}: {name} must be a scalar or a schedule, got an array "
                    f"of shape {np.shape(value)}"
                )
            _check_constraint(definition, name, value)

        active = []
        for slot, option in definition.slots:
            when = option.when
            if when is None:
                present = True
            elif isinstance(when, str):
                flag = hyper[when]
                present = flag is not None and flag is not False
            else:
                present = bool(when(hyper))
            if present:
                active.append(slot)
        rng_seed = None
        if definition.takes_key:
            rng_seed = arguments.get(definition.seed_arg)
            check_seed(rule, definition.seed_arg, rng_seed)
        return cls(
            definition=definition,
            arguments=hyper,
            slot_dtypes=slot_dtypes,
            active_slots=tuple(active),
            schedules=frozenset(schedules),
            stochastic_rounding=stochastic,
            rounding_seed=seed,
            rng_seed=rng_seed,
        )

    def values_at(self, count: jax.Array) -> dict[str, Any]:
        """Hyperparameter values for the update taken at ``count`` (0-based).

        Schedules are called here (at trace time, in ``init`` and in every
        ``update``); one returning anything but a numeric scalar raises an
        error naming the hyperparameter.
        """
        values = {}
        for name, value in self.arguments.items():
            if name in self.schedules:
                value = value(count)
                check_schedule_value(self.definition.name, name, value)
            values[name] = value
        return values


def per_leaf_values(
    config: RuleConfig,
    updates: Any,
    treedef: Any,
    n: int,
    names: Collection[str] | None = None,
) -> dict[str, list[Any]]:
    """Each per-leaf hyperparameter, broadcast to one value per leaf.

    ``updates`` is the gradient (or parameter) tree, ``treedef`` its
    structure and ``n`` its number of leaves. A callable value is called with
    ``updates``; a tree is broadcast to the leaves below each of its leaves
    (nodes that ``per_leaf_is_leaf`` marks as values are leaves). ``names``
    limits the work to some of them.
    """
    definition = config.definition
    values: dict[str, list[Any]] = {}
    for name, default in definition.per_leaf.items():
        if names is not None and name not in names:
            continue
        value = config.arguments[name]
        if value is None:
            values[name] = [default] * n
            continue
        if callable(value):  # (a tree given directly was checked at bind)
            tree = value(updates)
            check_per_leaf_tree(definition, name, tree)
        else:
            tree = value
        is_leaf = definition.per_leaf_is_leaf.get(name)
        try:
            if is_leaf is None:
                full = jax.tree.broadcast(tree, updates)
            else:
                full = jax.tree.map(
                    lambda value, subtree: jax.tree.map(lambda _: value, subtree),
                    tree,
                    updates,
                    is_leaf=is_leaf,
                )
            values[name] = treedef.flatten_up_to(full)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{definition.name}: {name} must be a pytree prefix of the "
                f"gradients; {error}"
            ) from None
    return values


def leaf_arguments(
    config: RuleConfig, per_leaf: Mapping[str, list[Any]] | None, i: int
) -> Mapping[str, Any]:
    """The bound hyperparameters as leaf ``i`` sees them (for slot shapes).

    Each per-leaf hyperparameter is that leaf's value instead of its tree.
    """
    if not per_leaf or not config.definition.per_leaf:
        return config.arguments
    own = {k: v[i] for k, v in per_leaf.items() if k in config.definition.per_leaf}
    return {**config.arguments, **own}
