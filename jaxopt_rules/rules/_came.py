"""CAME: Adafactor's factored moments, with a factored confidence of each step."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adafactor import _rms
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


def _row_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """Row statistics (means over the last axis) of a leaf of rank >= 2."""
    del hyper
    return shape[:-1] if len(shape) >= 2 else (1,)


def _col_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """Column statistics (means over the second-to-last axis)."""
    del hyper
    return shape[:-2] + shape[-1:] if len(shape) >= 2 else (1,)


def _full_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """The unfactored second moment of vectors and scalars, ``(1,)`` otherwise."""
    del hyper
    return shape if len(shape) < 2 else (1,)


def _factored_rsqrt(row: Array, col: Array) -> Array:
    """``1 / sqrt`` of the rank-one estimate ``row col^T / mean(row)``."""
    r = 1 / jnp.sqrt(row / jnp.mean(row, axis=-1, keepdims=True))
    return r[..., :, None] * (1 / jnp.sqrt(col))[..., None, :]


@rule(
    name="came",
    slots={
        "v_row": Slot(square=True, shape=_row_shape),
        "v_col": Slot(square=True, shape=_col_shape),
        "v": Slot(square=True, shape=_full_shape),
        "r_row": Slot(square=True, shape=_row_shape),
        "r_col": Slot(square=True, shape=_col_shape),
    },
    constraints={
        "learning_rate": "> 0",
        "b1": "[0, 1]",
        "b2": "[0, 1]",
        "b3": "[0, 1]",
        "eps": ">= 0",
        "eps_residual": ">= 0",
        "clip_threshold": "> 0",
        "weight_decay": ">= 0",
    },
)
def came(
    grad: Array,
    mu: Array,
    v_row: Array,
    v_col: Array,
    v: Array,
    r_row: Array,
    r_col: Array,
    param: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: Scalar = 0.9999,
    eps: Scalar = 1e-30,
    eps_residual: Scalar = 1e-16,
    clip_threshold: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
) -> tuple[Array, Array, Array, Array, Array, Array, Array]:
    r"""CAME: Adafactor whose step is scaled by a factored confidence.

    Matrices (and leaves of higher rank, over their last two axes) keep
    Adafactor's row and column averages of the squared gradient, and the same
    factored averages of the squared distance between the normalised step
    and its momentum (the instability); the step is the momentum divided by
    the root of that instability, so components whose steps keep changing
    move less. Vectors and scalars keep a full second moment and step by the
    momentum. Memory: one moment plus row and column vectors per matrix.

    Update::

        G_t = g_t**2 + eps
        (rank >= 2)  R_t = b2 R_{t-1} + (1 - b2) mean_cols(G_t)
                     C_t = b2 C_{t-1} + (1 - b2) mean_rows(G_t)
                     V_t = R_t C_t^T / mean(R_t)
        (else)       V_t = b2 V_{t-1} + (1 - b2) G_t
        U_t = g_t / sqrt(V_t);  U_t <- U_t / max(1, RMS(U_t) / clip_threshold)
        m_t = b1 m_{t-1} + (1 - b1) U_t
        (rank >= 2)  S_t = (U_t - m_t)**2 + eps_residual
                     factored like V_t with b3: Z_t
                     u_t = -lr_t * (m_t / sqrt(Z_t) + wd * theta_{t-1})
        (else)       u_t = -lr_t * (m_t + wd * theta_{t-1})

    Args:
        learning_rate: step size (no default, as in the authors' code), a
            number or a schedule of the step count.
        b1: decay of the momentum.
        b2: decay of the squared-gradient averages.
        b3: decay of the instability averages.
        eps: added to the squared gradient.
        eps_residual: added to the squared instability.
        clip_threshold: the largest RMS of the normalised step.
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        v_row_dtype: storage dtype of ``R`` (likewise; and so for ``v_col``,
            ``v``, ``r_row`` and ``r_col`` with their own arguments).
        v_col_dtype: storage dtype of ``C``.
        v_dtype: storage dtype of the unfactored second moment.
        r_row_dtype: storage dtype of the instability's row averages.
        r_col_dtype: storage dtype of its column averages.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import came
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> tx = came(learning_rate=1e-3)
        >>> grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -1.0, 0.0])}
        >>> state = tx.init(params)
        >>> [s.shape for s in (state.v_row["w"], state.v_col["w"], state.v["b"])]
        [(2,), (3,), (3,)]

    References:
        Luo, Ren, Zheng, Jiang, Jiang and You, "CAME: Confidence-guided
        Adaptive Memory Efficient Optimization", ACL 2023. Verified against
        the authors' ``came-pytorch`` 0.1.3 (``CAME``).
    """
    sq = grad * grad + eps
    if grad.ndim >= 2:
        v_row = b2 * v_row + (1 - b2) * jnp.mean(sq, axis=-1)
        v_col = b2 * v_col + (1 - b2) * jnp.mean(sq, axis=-2)
        step = _factored_rsqrt(v_row, v_col) * grad
    else:
        v = b2 * v + (1 - b2) * sq
        step = grad / jnp.sqrt(v)
    step = step / jnp.maximum(_rms(step) / clip_threshold, 1.0)
    mu = b1 * mu + (1 - b1) * step
    if grad.ndim >= 2:
        residual = (step - mu) ** 2 + eps_residual
        r_row = b3 * r_row + (1 - b3) * jnp.mean(residual, axis=-1)
        r_col = b3 * r_col + (1 - b3) * jnp.mean(residual, axis=-2)
        direction = _factored_rsqrt(r_row, r_col) * mu
    else:
        direction = mu
    update = -learning_rate * (direction + weight_decay * param)
    return update, mu, v_row, v_col, v, r_row, r_col


SPEC = RuleSpec(
    name="came",
    factory=came,
    hyperparams={"learning_rate": 1e-2},
    reads_whole_leaves=True,
    authors=AuthorsReference(
        requirement="came-pytorch==0.1.3",
        optimizer="came_pytorch.CAME",
        # float32 within 1e-4, not 1e-5: this package rounds hyperparameters
        # to the compute dtype (docs: hyperparameter precision), so 1 - b3 is
        # computed from float32(0.9999), 1.7e-4 above 1e-4, and the
        # confidence's column averages scale every step by its root: 3.0e-5
        # after 100 steps with the default betas. With betas exact in float32
        # (the third case) this rule is within 2e-7 of the reference.
        tolerance={"float64": 1e-10, "float32": 1e-4},
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "b3": 0.999,
                    "eps": 1e-20,
                    "eps_residual": 1e-12,
                    "clip_threshold": 0.5,
                    "weight_decay": 0.1,
                },
                {
                    "lr": 1e-2,
                    "betas": (0.8, 0.99, 0.999),
                    "eps": (1e-20, 1e-12),
                    "clip_threshold": 0.5,
                    "weight_decay": 0.1,
                },
            ),
            (
                {"learning_rate": 1e-2, "b2": 1 - 2**-10, "b3": 1 - 2**-13},
                {"lr": 1e-2, "betas": (0.9, 1 - 2**-10, 1 - 2**-13)},
            ),
        ),
    ),
)
