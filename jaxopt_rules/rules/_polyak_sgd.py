"""SGD with Polyak's step size: the step that reaches ``f_min`` on a linear model."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core import Array, Scalar, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


_VARIANTS = ("sps", "sps+")


def _check_variant(hyper: Mapping[str, Any]) -> None:
    if hyper["variant"] not in _VARIANTS:
        raise ValueError(
            f"polyak_sgd: variant must be one of {_VARIANTS}, got {hyper['variant']!r}"
        )


def _direction_sq_norm(grad: Array, *, scaling: Scalar) -> dict[str, Array]:
    """``|scaling * g|**2`` of one leaf (summed over the tree into ``stats``)."""
    return {"sq_norm": jnp.sum(abs_sq(-scaling * grad))}


@rule(
    name="polyak_sgd",
    global_stats=_direction_sq_norm,
    extra_args=("value",),
    static=("variant",),
    complex_params=True,
    constraints={"max_learning_rate": ">= 0", "scaling": ">= 0", "eps": ">= 0"},
    positional=("max_learning_rate", "scaling", "f_min", "eps", "variant"),
    check=_check_variant,
)
def polyak_sgd(
    grad: Array,
    value: Array,
    stats: dict[str, Array],
    *,
    max_learning_rate: Scalar = 1.0,
    scaling: Scalar = 1.0,
    f_min: Scalar = 0.0,
    eps: Scalar = 0.0,
    variant: str = "sps",
) -> Array:
    r"""SGD with Polyak's step size, capped: for losses whose minimum is known.

    A drop-in for ``optax.polyak_sgd`` (same arguments, defaults and
    numbers). ``update`` needs the loss at the parameters:
    ``tx.update(grads, state, params, value=loss)``.

    Update::

        d_t = -scaling_t * g_t                 (norms over all leaves together)
        gap_t = f(x_t) - f_min                 ('sps+': max(gap_t, 0))
        eta_t = min(gap_t / (||d_t||**2 + eps), max_learning_rate)
                (0 where ||d_t||**2 + eps <= 2.2e-16, float64's epsilon)
        u_t = eta_t * d_t

    optax scales the gradient by ``scaling`` before measuring its norm (it is
    ``sgd(scaling)`` chained with the step size), so ``scaling`` divides the
    Polyak step as well as multiplying the direction: a step of
    ``min(gap / (scaling * ||g||**2), scaling * max_learning_rate) * g``.
    With ``scaling = 1`` this is the capped stochastic Polyak step (SPS_max)
    of Loizou et al.

    Args:
        max_learning_rate: the cap on the step size ``eta_t``.
        scaling: multiplies the gradient before the step size is computed; a
            number or a schedule of the step count.
        f_min: a lower bound on the loss (0 for models that interpolate).
        eps: added to the squared norm in the step size's denominator.
        variant: ``'sps'``, or ``'sps+'`` (a negative gap gives no step).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
        ``value=``, the loss at ``params``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> loss = lambda p: jnp.sum(p["w"] ** 2)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.polyak_sgd()
        >>> value, grads = jax.value_and_grad(loss)(params)
        >>> updates, _ = tx.update(grads, tx.init(params), params, value=value)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.5, -1. ], dtype=float32)

    References:
        Polyak, "Introduction to Optimization", 1987.
        Loizou, Vaswani, Laradji and Lacoste-Julien, "Stochastic Polyak
        Step-size for SGD: An Adaptive Learning Rate for Fast Convergence",
        AISTATS 2021.
        Garrigos, Gower and Schaipp, "Function Value Learning: Adaptive
        Learning Rates Based on the Polyak Stepsize and Function Splitting in
        ERM", 2023 (the 'sps+' variant).
        Verified against ``optax.polyak_sgd``.
    """
    direction = -scaling * grad
    sq_norm = stats["sq_norm"]
    gap = jnp.asarray(value - f_min).astype(sq_norm.dtype)
    if variant == "sps+":
        gap = jnp.maximum(gap, 0)
    step = jnp.where(
        sq_norm + eps <= np.finfo(float).eps,
        jnp.zeros((), sq_norm.dtype),
        jnp.minimum(gap / (sq_norm + eps), max_learning_rate),
    )
    return step * direction


SPEC = RuleSpec(
    name="polyak_sgd",
    factory=polyak_sgd,
    hyperparams={"max_learning_rate": 0.5},
    schedule_arg="scaling",
    reference="optax.polyak_sgd",
    reference_factory=optax.polyak_sgd,
    reference_cases=(
        {},
        {"max_learning_rate": 0.3, "scaling": 0.5, "f_min": -0.5, "eps": 1e-3},
        {"f_min": 0.5, "variant": "sps+"},
        {"scaling": optax.linear_schedule(1.0, 0.5, 50)},
    ),
)
