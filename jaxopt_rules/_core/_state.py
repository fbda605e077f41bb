"""State classes for rules: one NamedTuple per rule and set of active slots.

Each class has a scalar int32 ``count`` followed by one field per active slot
(and ``rounding_key`` with stochastic rounding), so
``optax.tree.get(state, "mu")`` finds a slot by name.

A class is identified by its *key*: the module that defines the rule, the
rule's name, its active slots, all its slots and the extra fields. The same key
gives the same class in every process, whatever the order in which rules are
created, and a user's rule named ``adam`` never shares a class with the
catalog's ``adam`` (their modules differ).

* **Pickling** needs no factory call in the loading process: an instance
  pickles as ``(rebuild_state, (key, values))``, and :func:`rebuild_state`
  makes the class from the key.
* **Names**: ``AdamState`` when all slots are present, otherwise the present
  slots are spelled out (``RmspropNuTraceState``, ``SgdCountState``); with the
  stochastic-rounding key the name ends in ``RoundingState``. The catalog's
  classes (rules defined in ``jaxopt_rules``) are also attributes of this
  module, created when the rule is defined, so ``jaxopt_rules._core._state.
  AdamState`` is importable in a fresh process.
"""

import itertools
import re
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


StateKey = tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""``(owner module, rule name, active slots, all slots, extra fields)``."""

_CLASSES: dict[StateKey, type] = {}
_PACKAGE = __name__.split(".", 1)[0]


def _camel(name: str) -> str:
    name = re.sub(r"\W", "", name)
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _class_name(
    rule_name: str, slot_names: Sequence[str], all_slots: Sequence[str], extra: Any
) -> str:
    rule_part = _camel(rule_name)
    if not rule_part or rule_part[0].isdigit():
        rule_part = f"Rule{rule_part}"
    suffix = "RoundingState" if "rounding_key" in extra else "State"
    if tuple(slot_names) == tuple(all_slots):
        return f"{rule_part}{suffix}"
    return f"{rule_part}{''.join(map(_camel, slot_names)) or 'Count'}{suffix}"


def rebuild_state(key: StateKey, values: Sequence[Any]) -> Any:
    """Recreates a pickled state: its class from ``key``, then the instance."""
    owner, rule_name, slot_names, all_slots, extra = key
    return state_class(rule_name, slot_names, all_slots, extra, owner=owner)(*values)


def _reduce(self: Any) -> tuple[Any, tuple[StateKey, tuple[Any, ...]]]:
    return rebuild_state, (type(self)._state_key, tuple(self))


def state_class(
    rule_name: str,
    slot_names: tuple[str, ...],
    all_slots: tuple[str, ...],
    extra: tuple[str, ...] = (),
    *,
    owner: str | None = _PACKAGE,
) -> type:
    """Returns the NamedTuple class ``<RuleName>State(count, *slot_names, *extra)``.

    Args:
        rule_name: the rule's name.
        slot_names: the slots present with these hyperparameters.
        all_slots: every slot the rule declares (the name spells out the
            present ones when some are absent).
        extra: fields after the slots (``("rounding_key",)``).
        owner: the module defining the rule; classes of rules defined in this
            package are also attributes of this module.

    Returns:
        The class, the same object for the same arguments.
    """
    owner = owner or "__main__"  # functions exec'd without a module name
    key: StateKey = (
        owner,
        rule_name,
        tuple(slot_names),
        tuple(all_slots),
        tuple(extra),
    )
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls
    name = _class_name(rule_name, slot_names, all_slots, extra)
    fields: list[tuple[str, Any]] = [("count", jax.Array)]
    fields += [(slot, Any) for slot in slot_names]
    fields += [(field, jax.Array) for field in extra]
    cls = NamedTuple(name, fields)
    cls._state_key = key  # type: ignore[attr-defined]
    cls.__reduce__ = _reduce
    cls.__doc__ = (
        f"State of the {rule_name!r} rule: an int32 step count and the "
        f"slots {', '.join(slot_names) or '(none)'}"
        + (f", and {', '.join(extra)}." if extra else ".")
    )
    if owner.split(".", 1)[0] == _PACKAGE:
        module = sys.modules[__name__]
        existing = getattr(module, name, None)
        if existing is not None and existing._state_key != key:
            raise RuntimeError(
                f"two rules of {_PACKAGE} have state class {name}: "
                f"{existing._state_key} and {key}; rename one"
            )
        cls.__module__ = __name__
        setattr(module, name, cls)
    else:
        cls.__module__ = owner
    _CLASSES[key] = cls
    return cls


def all_state_classes(
    rule_name: str,
    all_slots: tuple[str, ...],
    optional: Sequence[bool],
    *,
    owner: str | None,
    max_optional: int = 4,
    takes_key: bool = False,
) -> None:
    """Creates the classes of every combination of present slots, in advance.

    Called when a rule is defined, so that the catalog's classes exist as soon
    as the package is imported. Rules with more than ``max_optional`` optional
    slots get their classes when a factory is called instead.
    """
    if sum(optional) > max_optional:
        return
    key: tuple[str, ...] = ("rng_key",) if takes_key else ()
    extras = (key, (*key, "rounding_key"))
    choices = [(True, False) if opt else (True,) for opt in optional]
    for present in itertools.product(*choices):
        slots = tuple(s for s, keep in zip(all_slots, present, strict=True) if keep)
        for extra in extras:
            state_class(rule_name, slots, all_slots, extra, owner=owner)


def safe_increment(count: jax.Array) -> jax.Array:
    """Adds one to an int32 counter, saturating at the largest int32."""
    largest = jnp.iinfo(jnp.int32).max
    return jnp.where(count < largest, count + 1, largest).astype(jnp.int32)
