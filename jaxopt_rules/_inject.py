"""``optax.inject_hyperparams`` with a rule's static arguments filled in."""

from collections.abc import Callable, Iterable
from typing import Any

import optax


def inject_hyperparams(
    factory: Callable[..., optax.GradientTransformation],
    *,
    static_args: Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """Wraps ``factory`` so its numeric hyperparameters live in the state.

    Same as ``optax.inject_hyperparams``, except that the factory's own
    ``static_args`` (structural and per-leaf hyperparameters and storage
    dtypes, which must not be traced or turned into schedules) are added to
    ``static_args``.

    Args:
        factory: a rule factory of this package or any optax factory.
        static_args: further argument names to keep static.
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
    names = (*getattr(factory, "static_args", ()), *static_args)
    return optax.inject_hyperparams(
        factory,
        static_args=tuple(dict.fromkeys(names)),
        hyperparam_dtype=hyperparam_dtype,
    )
