"""Adafactor: steps scaled by a factored estimate of the gradient's second moment."""

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


MIN_PARAM_SCALE = 1e-3
"""The floor of the parameter scale (Shazeer and Stern's ``eps_2``, optax's)."""


def factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The axes ``(d1, d0)`` a leaf's second moment is factored along, or ``None``.

    ``d0`` is the longest axis and ``d1`` the second longest (ties broken as
    ``numpy.argsort`` breaks them); a leaf is factored when ``factored`` holds,
    it has two axes or more, and ``d1`` has at least ``min_dim_size_to_factor``
    elements.

    Example:
        >>> factored_dims((3, 256, 128), True, 128)
        (2, 1)
        >>> factored_dims((3, 256), True, 128) is None
        True
    """
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _dims(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, int] | None:
    return factored_dims(shape, hyper["factored"], hyper["min_dim_size_to_factor"])


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1 :]


def _row_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """``v_row``: the mean over the longest axis, or ``(1,)`` unfactored."""
    dims = _dims(shape, hyper)
    return (1,) if dims is None else _without(shape, dims[1])


def _col_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """``v_col``: the mean over the second longest axis, or ``(1,)`` unfactored."""
    dims = _dims(shape, hyper)
    return (1,) if dims is None else _without(shape, dims[0])


def _full_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """``v``: the parameter's shape unfactored, ``(1,)`` factored."""
    return shape if _dims(shape, hyper) is None else (1,)


def _rms(x: Array) -> Array:
    return jnp.sqrt(jnp.mean(abs_sq(x)))


def _param_scale(param: Array) -> Array:
    """``max(RMS(param), 1e-3)``, as optax's ``safe_root_mean_squares``."""
    rms = _rms(param)
    floor = jnp.asarray(MIN_PARAM_SCALE, rms.dtype)
    return jnp.where(rms <= floor, floor, rms)


@rule(
    name="adafactor",
    slots={
        "v_row": Slot(square=True, shape=_row_shape),
        "v_col": Slot(square=True, shape=_col_shape),
        "v": Slot(square=True, shape=_full_shape),
        "ema": Slot(
            when="momentum", dtype_arg="dtype_momentum", dtype_default=jnp.float32
        ),
    },
    static=("min_dim_size_to_factor",),
    per_leaf={"weight_decay_mask": True},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "min_dim_size_to_factor": ">= 0",
        "decay_rate": ">= 0",
        "clipping_threshold": "> 0",
        "momentum": "[0, 1]",
        "weight_decay_rate": ">= 0",
        "eps": "> 0",
    },
    positional=(
        "learning_rate",
        "min_dim_size_to_factor",
        "decay_rate",
        "decay_offset",
        "multiply_by_parameter_scale",
        "clipping_threshold",
        "momentum",
        "dtype_momentum",
        "weight_decay_rate",
        "eps",
        "factored",
        "weight_decay_mask",
    ),
)
def adafactor(
    grad: Array,
    v_row: Array,
    v_col: Array,
    v: Array,
    ema: Array | None,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Scalar = 0.8,
    decay_offset: Scalar = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Scalar | None = 1.0,
    momentum: Scalar | None = None,
    weight_decay_rate: Scalar | None = None,
    eps: Scalar = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array | None, ...]:
    r"""Adafactor: Adam-like scaling from row and column statistics of ``g**2``.

    A drop-in for ``optax.adafactor`` (same arguments and numbers), plus
    ``v_row_dtype``, ``v_col_dtype`` and ``v_dtype`` for the storage of the
    statistics. A leaf whose two longest axes have at least
    ``min_dim_size_to_factor`` elements keeps only the means of ``g**2`` over
    each of them (``m + n`` numbers for an ``m x n`` matrix); other leaves keep
    the full second moment. The state has optax's layout: ``v_row``, ``v_col``
    and ``v`` for every leaf, the unused ones of shape ``(1,)``.

    Update::

        t = step - decay_offset                     (step 1 on the first update)
        beta_t = 1 - t**(-decay_rate)
        s_t = |g_t|**2 + eps
        factored (d0 the longest axis, d1 the second longest):
            R_t = beta_t * R_{t-1} + (1 - beta_t) * mean(s_t, axis=d0)    (v_row)
            C_t = beta_t * C_{t-1} + (1 - beta_t) * mean(s_t, axis=d1)    (v_col)
            x_t = g_t / sqrt(R_t / mean(R_t) * C_t)   (broadcast back over d0, d1)
        otherwise:
            V_t = beta_t * V_{t-1} + (1 - beta_t) * s_t                    (v)
            x_t = g_t / sqrt(V_t)
        x_t = x_t / max(1, RMS(x_t) / clipping_threshold)   (unless it is None)
        x_t = lr_t * x_t                                    (unless lr is None)
        x_t = x_t * max(RMS(theta_{t-1}), 1e-3)  (with multiply_by_parameter_scale)
        e_t = momentum * e_{t-1} + (1 - momentum) * x_t    (unless momentum is None)
        u_t = -(e_t + wd_t * theta_{t-1})   (the decay term where weight_decay_mask,
                                             unless weight_decay_rate is None)

    ``RMS`` is the root mean square over the whole leaf. Differences from the
    paper (Shazeer and Stern, Algorithms 4 and 5), which this rule shares with
    optax: the step size is ``learning_rate`` (a number or a schedule) instead
    of the paper's relative step ``min(1e-2, 1/sqrt(t))``; the paper factors
    every matrix, optax only leaves whose two longest axes reach
    ``min_dim_size_to_factor`` (128), and of a higher-rank leaf only those two
    axes; the paper's decay ``1 - t**(-0.8)`` is ``decay_rate`` here, and
    ``decay_offset`` restarts it for fine-tuning; the momentum averages the
    final step, and the weight decay (not in the paper) is added after the
    learning rate, so it is not scaled by it. Precision: this rule computes
    the decay schedule in the compute dtype (float64 for float64 parameters);
    optax computes it in float32 when ``decay_rate`` is a Python float.

    Args:
        learning_rate: step size, a number or a schedule of the step count;
            ``None`` leaves the steps unscaled.
        min_dim_size_to_factor: a leaf is factored only when its two longest
            axes have at least this many elements (static: it fixes the
            statistics' shapes).
        decay_rate: exponent of the decay schedule ``1 - t**(-decay_rate)``.
        decay_offset: the step at which the decay schedule starts (for
            fine-tuning: the step count of the run being continued).
        multiply_by_parameter_scale: scale each leaf's steps by the root mean
            square of its parameter (at least 1e-3).
        clipping_threshold: largest root mean square of a leaf's scaled
            gradient, before the learning rate; ``None`` does not clip.
        momentum: decay of an average of the steps; ``None`` keeps none (and
            no ``ema`` slot).
        dtype_momentum: storage dtype of the momentum average (default
            float32, as optax's; ``None``: the parameter's).
        weight_decay_rate: decay rate added to the steps after the learning
            rate, a number or a schedule; ``None`` adds none.
        eps: added to ``|g|**2`` before it is averaged, > 0.
        factored: whether to factor the second moment at all.
        weight_decay_mask: which leaves are decayed (pytree of booleans or a
            function of the parameters returning one); ``None`` decays every
            leaf.
        v_row_dtype: storage dtype of ``v_row`` (default: the parameter's).
        v_col_dtype: storage dtype of ``v_col`` (default: the parameter's).
        v_dtype: storage dtype of ``v`` (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.adafactor(1e-2, min_dim_size_to_factor=2)
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
        >>> state = tx.init(params)
        >>> state.v_row["w"].shape, state.v_col["w"].shape, state.v["w"].shape
        ((2,), (3,), (1,))
        >>> state.v["b"].shape
        (3,)
        >>> updates, state = tx.update(params, state, params)
        >>> updates["w"]
        Array([[-0.01, -0.01, -0.01],
               [-0.01, -0.01, -0.01]], dtype=float32)

    References:
        Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear
        Memory Cost", ICML 2018. Verified against ``optax.adafactor``.
    """
    t = step - decay_offset
    decay = 1 - t ** (-decay_rate)
    grad_sq = abs_sq(grad) + eps
    dims = factored_dims(grad.shape, factored, min_dim_size_to_factor)
    if dims is None:
        v = decay * v + (1 - decay) * grad_sq
        x = grad * v**-0.5
    else:
        d1, d0 = dims
        v_row = decay * v_row + (1 - decay) * jnp.mean(grad_sq, axis=d0)
        v_col = decay * v_col + (1 - decay) * jnp.mean(grad_sq, axis=d1)
        reduced_d1 = d1 - 1 if d1 > d0 else d1
        row_factor = (v_row / jnp.mean(v_row, axis=reduced_d1, keepdims=True)) ** -0.5
        col_factor = v_col**-0.5
        x = grad * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
    if clipping_threshold is not None:
        x = x / jnp.maximum(1.0, _rms(x) / clipping_threshold)
    if learning_rate is not None:
        x = x * learning_rate
    if multiply_by_parameter_scale:
        x = x * _param_scale(param)
    if momentum is not None and ema is not None:
        ema = (1 - momentum) * x + momentum * ema
        x = ema
    if weight_decay_rate is not None and weight_decay_mask:
        x = x + weight_decay_rate * param
    return -x, v_row, v_col, v, ema


SPEC = RuleSpec(
    name="adafactor",
    reads_whole_leaves=True,
    factory=adafactor,
    # Clipping each update's RMS to 1 slows the last approach to Rosenbrock's
    # minimum, with 4-bit second moments beyond the kit's 10,000 steps; the
    # reference cases keep optax's default clipping.
    hyperparams={"learning_rate": 1e-2, "clipping_threshold": None},
    reference="optax.adafactor",
    reference_factory=optax.adafactor,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "min_dim_size_to_factor": 2, "decay_rate": 0.7},
        {"learning_rate": 1e-2, "min_dim_size_to_factor": 2, "factored": False},
        {
            "learning_rate": 1e-2,
            "multiply_by_parameter_scale": False,
            "clipping_threshold": None,
            "decay_offset": -3,
            "eps": 1e-20,
        },
        # optax computes its decay schedule in float32 when decay_rate is a
        # Python float, in the parameters' precision when it is an array.
        {
            "min_dim_size_to_factor": 3,
            "clipping_threshold": 0.5,
            "decay_rate": np.float64(0.8),
        },
        {
            "learning_rate": 1e-2,
            "min_dim_size_to_factor": 2,
            "momentum": 0.9,
            "dtype_momentum": None,
            "weight_decay_rate": 1e-3,
        },
        {
            "learning_rate": 1e-2,
            "weight_decay_rate": 1e-3,
            "weight_decay_mask": WEIGHT_DECAY_MASK,
        },
    ),
)
