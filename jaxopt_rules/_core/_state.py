"""State classes for rules: one NamedTuple per rule and set of active slots.

Each class has a scalar int32 ``count`` followed by one field per active slot,
so ``optax.tree.get(state, "mu")`` finds a slot by name. Classes are created
once per (rule, slots) pair and registered in this module under their name, so
states pickle and unpickle by reference like any module-level NamedTuple.
"""

import re
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


_CLASSES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], type] = {}


def _camel(name: str) -> str:
    name = re.sub(r"\W", "", name)
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def state_class(
    rule_name: str,
    slot_names: tuple[str, ...],
    all_slots: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> type:
    """Returns the NamedTuple class ``<RuleName>State(count, *slot_names, *extra)``.

    The name depends only on the rule and its fields, so it is the same in
    every process: ``AdamState`` when all slots are present, otherwise the
    present slots are spelled out (``RmspropNuTraceState``, ``SgdCountState``);
    with the stochastic-rounding key (``extra=("rounding_key",)``) the name
    ends in ``RoundingState`` (``AdamRoundingState``).
    """
    key = (rule_name, slot_names, extra)
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls
    module = sys.modules[__name__]
    rule_part = _camel(rule_name)
    if not rule_part or rule_part[0].isdigit():
        rule_part = f"Rule{rule_part}"
    suffix_name = "RoundingState" if extra else "State"
    if slot_names == all_slots:
        base = f"{rule_part}{suffix_name}"
    else:
        base = f"{rule_part}{''.join(map(_camel, slot_names)) or 'Count'}{suffix_name}"
    fields_wanted = ("count", *slot_names, *extra)
    qualname = base
    suffix = 1
    while hasattr(module, qualname):
        existing = getattr(module, qualname)
        if getattr(existing, "_fields", None) == fields_wanted:
            break
        suffix += 1
        qualname = f"{base}{suffix}"
    else:
        fields: list[tuple[str, Any]] = [("count", jax.Array)]
        fields += [(name, Any) for name in slot_names]
        fields += [(name, jax.Array) for name in extra]
        cls = NamedTuple(qualname, fields)
        cls.__module__ = __name__
        cls.__doc__ = (
            f"State of the {rule_name!r} rule: an int32 step count and the "
            f"slots {', '.join(slot_names) or '(none)'}"
            + (f", and {', '.join(extra)}." if extra else ".")
        )
        setattr(module, qualname, cls)
    cls = getattr(module, qualname)
    _CLASSES[key] = cls
    return cls


def safe_increment(count: jax.Array) -> jax.Array:
    """Adds one to an int32 counter, saturating at the largest int32."""
    largest = jnp.iinfo(jnp.int32).max
    return jnp.where(count < largest, count + 1, largest).astype(jnp.int32)
