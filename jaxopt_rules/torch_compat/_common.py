"""What every torch_compat factory shares: torch's lerp, flags, validation."""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax.numpy as jnp

from jaxopt_rules._core import Array, RuleFactory, Scalar


F = TypeVar("F", bound=Callable[..., object])


def lerp(start: Array, end: Array, weight: Scalar) -> Array:
    """``torch.lerp``: ``start + weight * (end - start)``, torch's two-branch form.

    torch evaluates ``end - (end - start) * (1 - weight)`` when ``weight >= 0.5``
    (exact at ``weight = 1``); matching it keeps float32 trajectories together.
    """
    diff = end - start
    return jnp.where(weight < 0.5, start + weight * diff, end - diff * (1 - weight))


def check_execution_flags(algorithm: str, **flags: Any) -> None:
    """Accepts torch's execution flags (``None`` or a bool), which change nothing.

    The flags are described in the package's docstring
    (``jaxopt_rules.torch_compat``).

    Raises:
        TypeError: a flag is neither ``None`` nor a bool; the message names it.
    """
    for name, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(
                f"{algorithm}: {name} must be None or a bool (it only selects how "
                f"torch runs the step and has no effect here), got {value!r}"
            )


def pair(algorithm: str, name: str, value: Sequence[Any]) -> tuple[Any, Any]:
    """Unpacks a torch pair argument (``betas``, ``etas``, ``step_sizes``)."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{algorithm}: {name} must be a pair of numbers, got {value!r}"
        ) from None
    return first, second


def has_momentum(hyper: Mapping[str, Any]) -> bool:
    """Slot condition: torch keeps a momentum buffer only for momentum != 0."""
    return hyper["momentum"] != 0


def coupled_decay(grad: Array, param: Array, weight_decay: Scalar) -> Array:
    """Torch's L2 weight decay: ``grad + weight_decay * param`` (skipped at 0)."""
    return jnp.where(weight_decay != 0, grad + weight_decay * param, grad)


def signed(grad: Array, maximize: bool) -> Array:
    """Torch's ``maximize``: ascend instead of descend."""
    return -grad if maximize else grad


def decoupled_decay(
    update: Array, param: Array, lr: Scalar, weight_decay: Scalar
) -> Array:
    """Adds torch's decoupled decay ``p <- p * (1 - lr * wd)`` to an update."""
    return jnp.where(weight_decay != 0, update + (-lr * weight_decay) * param, update)


def catalog_entry(*rules: RuleFactory) -> Callable[[F], F]:
    """Records on a public factory the rules it builds and their static args."""

    def mark(factory: F) -> F:
        accepted = inspect.signature(factory).parameters
        static: list[str] = []
        for r in rules:
            static += [n for n in r.static_args if n not in static and n in accepted]
        setattr(factory, "static_args", tuple(static))  # noqa: B010
        setattr(factory, "rules", rules)  # noqa: B010
        return factory

    return mark
