"""torch.optim.Adafactor: factored second moments, relative step sizes."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    decoupled_decay,
    lerp,
    signed,
)


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:-1], 1) if len(shape) > 1 else (0,)


def _col_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:-2], 1, shape[-1]) if len(shape) > 1 else (0,)


def _variance_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) <= 1 else (0,)


def _norm(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x * x))


@rule(
    name="torch_adafactor",
    # Matrices (and higher) keep factored row and column statistics over
    # their last two dimensions; vectors and scalars keep a full variance.
    # The unused slots of a leaf have no elements.
    slots={
        "row_var": Slot(shape=_row_shape),
        "col_var": Slot(shape=_col_shape),
        "variance": Slot(shape=_variance_shape),
    },
    constraints={"lr": ">= 0", "beta2_decay": "<= 0", "d": ">= 0"},
    positional=("lr", "beta2_decay", "eps", "d", "weight_decay"),
    grouped={"eps": ("eps1", "eps2")},
    ignored={"foreach": None},
    keyword=("foreach", "maximize"),
    storage_args=False,
)
def adafactor(
    grad: Array,
    row_var: Array,
    col_var: Array,
    variance: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-2,
    beta2_decay: Scalar = -0.8,
    eps1: Scalar | None = None,
    eps2: Scalar = 1e-3,
    d: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
    maximize: bool = False,
) -> tuple[Array, Array, Array, Array]:
    r"""``torch.optim.Adafactor``: the same arguments, defaults and numbers.

    No first moment; matrices keep row and column means of ``g**2`` over
    their last two dimensions, vectors a full average.

    Update (``t`` counts from 1)::

        g     = -g if maximize;   b_t = t**beta2_decay
        rho_t = min(lr, 1 / sqrt(t));  a_t = max(eps2, RMS(p)) * rho_t
        R = lerp(R, mean_cols(g**2), b_t);  C = lerp(C, mean_rows(g**2), b_t)
        V = R C / max(mean(R), eps1)                    (matrices)
        V = lerp(V, g**2, b_t)                           (vectors)
        u = g / sqrt(max(V, eps1**2))
        p = p * (1 - lr * weight_decay) - a_t / max(1, RMS(u) / d) * u

    Where optax differs: ``optax.adafactor`` factors only when both of the
    last dimensions reach 128, adds ``1e-30`` to ``g**2``, applies no
    relative step unless asked, and adds the decay after scaling.

    Args:
        lr: caps the relative step ``rho_t``; also scales the weight decay.
        beta2_decay: exponent of the second-moment decay ``t**beta2_decay``.
        eps: ``(eps1, eps2)``: the floor of the variance estimate (``None``:
            the dtype's machine epsilon) and of the parameters' RMS.
        d: clipping threshold of the update's RMS.
        weight_decay: decoupled decay rate (multiplied by ``lr``).
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``row_var`` and ``col_var`` (matrices) or ``variance`` (vectors);
        ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adafactor()
        >>> params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
        >>> state = tx.init(params)
        >>> state.row_var["w"].shape, state.col_var["w"].shape
        ((3, 1), (1, 4))

    References:
        Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear
        Memory Cost", ICML 2018. Verified against ``torch.optim.Adafactor``
        (torch 2.13).
    """
    grad = signed(grad, maximize)
    floor = jnp.finfo(grad.dtype).eps if eps1 is None else eps1
    one_minus_beta2_t = step**beta2_decay
    rho_t = jnp.minimum(lr, 1 / step**0.5)
    alpha = jnp.maximum(eps2, _norm(param) / grad.size**0.5) * rho_t
    if grad.ndim > 1:
        row_mean = jnp.square(jnp.sqrt(jnp.sum(grad * grad, -1, keepdims=True)))
        row_var = lerp(row_var, row_mean / grad.shape[-1], one_minus_beta2_t)
        col_mean = jnp.square(jnp.sqrt(jnp.sum(grad * grad, -2, keepdims=True)))
        col_var = lerp(col_var, col_mean / grad.shape[-2], one_minus_beta2_t)
        estimate = jnp.matmul(row_var, col_var)
        estimate = estimate / jnp.maximum(jnp.mean(row_var, -2, keepdims=True), floor)
    else:
        variance = lerp(variance, grad * grad, one_minus_beta2_t)
        estimate = variance
    update = 1 / jnp.sqrt(jnp.maximum(estimate, floor * floor)) * grad
    denom = jnp.maximum(1.0, _norm(update) / (update.size**0.5 * d))
    step_update = (-alpha / denom) * update
    return (
        decoupled_decay(step_update, param, lr, weight_decay),
        row_var,
        col_var,
        variance,
    )
