"""``optax.inject_hyperparams`` with a rule's static arguments filled in."""

from collections.abc import Callable, Iterable
from typing import Any

import optax


def inject_hyperparams(
    inner_factory: Callable[..., optax.GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """Wraps ``inner_factory`` so its numeric hyperparameters live in the state.

    Same signature and behaviour as ``optax.inject_hyperparams``, except that
    the factory's own ``static_args`` (structural and per-leaf
    hyperparameters and storage dtypes, which must not be traced or turned
    into schedules) are added to ``static_args``.

    Args:
        inner_factory: a rule factory of this package or any optax factory.
        static_args: further argument names to keep static: one name as a
            string, or an iterable of names.
        hyperparam_dtype: as in ``optax.inject_hyperparams``.

    Returns:
        A factory with the same arguments whose transforms store the numeric
        hyperparameters in ``state.hyperparams``, where they can be read or
        changed between steps without recompiling.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.inject_hyperparams(jr.adam)(learning_rate=1e-3, mu_dtype="bfloat16")
        >>> state = tx.init({"w": jnp.zeros(3)})
        >>> state.hyperparams["learning_rate"]
        Array(0.001, dtype=float32)
    """
    if isinstance(static_args, str):
        static_args = (static_args,)
    static_args = tuple(static_args)
    for name in static_args:
        if not isinstance(name, str):
            raise TypeError(
                f"inject_hyperparams: static_args holds {name!r}; it takes "
                "argument names (strings)"
            )
    names = (*getattr(inner_factory, "static_args", ()), *static_args)
    return optax.inject_hyperparams(
        inner_factory,
        static_args=tuple(dict.fromkeys(names)),
        hyperparam_dtype=hyperparam_dtype,
    )
