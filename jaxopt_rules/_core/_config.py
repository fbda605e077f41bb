"""Binding a factory call's arguments into a checked :class:`RuleConfig`.

Hyperparameters fall into four kinds:

* *dtype arguments* (one per slot): ``None`` or a floating dtype;
* the *rounding arguments* ``stochastic_rounding`` (a bool) and
  ``rounding_seed`` (an int), which every factory takes;
* *static* ones (declared, plus every ``bool``): fixed at trace time;
* *per-leaf* ones (such as a weight-decay ``mask``): a pytree prefix of the
  gradients, or a function of the gradients returning one, read at trace time;
* *numeric* ones: a number, an array scalar (possibly traced) or a schedule,
  a callable of the step count evaluated at every update.

Nothing here branches on a numeric value unless it is a concrete number, so the
same factory works under ``optax.inject_hyperparams``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_rules._core._constraints import concrete_scalar
from jaxopt_rules._core._definition import ROUNDING_ARGS, RuleDefinition


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | np.generic)


def _canonical_dtype(rule: str, arg: str, value: Any) -> np.dtype | None:
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
    return dtype


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

    @classmethod
    def bind(
        cls, definition: RuleDefinition, arguments: Mapping[str, Any]
    ) -> "RuleConfig":
        """Checks ``arguments`` (all of the factory's, defaults applied)."""
        rule = definition.name
        dtype_args = definition.dtype_args
        slot_dtypes = {
            slot: _canonical_dtype(rule, arg, arguments[arg])
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
        elif (
            isinstance(seed, bool)
            or not isinstance(seed, int | np.integer | jax.Array | np.ndarray)
            or np.ndim(seed) != 0
            or not jnp.issubdtype(jnp.result_type(seed), jnp.integer)
        ):
            raise TypeError(f"{rule}: rounding_seed must be an integer, got {seed!r}")
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
        schedules: set[str] = set()
        for name, value in hyper.items():
            if name in definition.per_leaf:
                continue
            if name in definition.static:
                if _is_array(value):
                    raise TypeError(
                        f"{rule}: {name} is structural and must be a Python value, "
                        f"got an array. With optax.inject_hyperparams, pass "
                        f"static_args={tuple(sorted(definition.static))!r}."
                    )
                continue
            if isinstance(value, bool) or value is None or isinstance(value, str):
                continue
            if callable(value):
                schedules.add(name)
                continue
            if _is_array(value) and np.ndim(value) != 0:
                raise ValueError(
                    f"{rule}: {name} must be a scalar or a schedule, got an array "
                    f"of shape {np.shape(value)}"
                )
            constraint = definition.constraints.get(name)
            scalar = concrete_scalar(value)
            if constraint is not None and scalar is not None:
                message = constraint.violation(name, scalar)
                if message is not None:
                    raise ValueError(f"{rule}: {message}")

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
        return cls(
            definition=definition,
            arguments=hyper,
            slot_dtypes=slot_dtypes,
            active_slots=tuple(active),
            schedules=frozenset(schedules),
            stochastic_rounding=stochastic,
            rounding_seed=seed,
        )

    def values_at(self, count: jax.Array) -> dict[str, Any]:
        """Hyperparameter values for the update taken at ``count`` (0-based)."""
        return {
            name: value(count) if name in self.schedules else value
            for name, value in self.arguments.items()
        }
