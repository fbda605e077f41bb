"""AdEMAMix: AdamW with a mixture of a fast and a slow momentum."""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, AuthorsReference, RuleSpec


def _alpha_at(count: Any, *, alpha: float, warmup_steps: int) -> Any:
    step = jnp.asarray(count) + 1.0
    return jnp.minimum(step * alpha / warmup_steps, alpha)


def _b3_at(count: Any, *, b1: float, b3: float, warmup_steps: int) -> Any:
    # (+ 1.0: a float as wide as x64 allows; an int32 divided gives float32.)
    frac = (jnp.asarray(count) + 1.0) / warmup_steps
    log_b1, log_b3 = math.log(b1), math.log(b3)
    return jnp.minimum(
        jnp.exp(log_b1 * log_b3 / ((1 - frac) * log_b3 + frac * log_b1)), b3
    )


def ademamix_alpha_scheduler(alpha: float, warmup_steps: int) -> optax.Schedule:
    r"""The AdEMAMix paper's warm-up of ``alpha``: linear from 0 to ``alpha``.

    For the ``alpha`` argument of :func:`ademamix`::

        alpha_t = min(t * alpha / warmup_steps, alpha)     (t = 1, 2, ...)

    Args:
        alpha: the final weight of the slow average.
        warmup_steps: steps to reach it (the paper's ``T_alpha``).

    Returns:
        An ``optax.Schedule`` of the (0-based) step count.

    Example:
        >>> from jaxopt_rules import ademamix_alpha_scheduler
        >>> float(ademamix_alpha_scheduler(5.0, 10)(0))  # step 1: 5 / 10
        0.5

    References:
        Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better,
        Faster, Older", ICLR 2025 (Appendix, the schedulers).
    """
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be positive, got {warmup_steps}")
    return functools.partial(_alpha_at, alpha=alpha, warmup_steps=warmup_steps)


def ademamix_b3_scheduler(b1: float, b3: float, warmup_steps: int) -> optax.Schedule:
    r"""The AdEMAMix paper's warm-up of ``b3``, from ``b1`` up to ``b3``.

    For the ``b3`` argument of :func:`ademamix`; the slow average's
    half-life grows linearly::

        b3_t = min(exp(ln b1 * ln b3 / ((1 - t / T) * ln b3 + (t / T) * ln b1)), b3)

    with ``T = warmup_steps`` and ``t = 1, 2, ...``.

    Args:
        b1: the fast average's decay, where the warm-up starts.
        b3: the final decay of the slow average.
        warmup_steps: steps to reach it (the paper's ``T_b3``).

    Returns:
        An ``optax.Schedule`` of the (0-based) step count.

    Example:
        >>> from jaxopt_rules import ademamix_b3_scheduler
        >>> round(float(ademamix_b3_scheduler(0.9, 0.999, 100)(99)), 6)
        0.999

    References:
        Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better,
        Faster, Older", ICLR 2025 (Appendix, the schedulers).
    """
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be positive, got {warmup_steps}")
    if not 0 < b1 <= b3 < 1:
        raise ValueError(f"need 0 < b1 <= b3 < 1, got b1={b1}, b3={b3}")
    return functools.partial(_b3_at, b1=b1, b3=b3, warmup_steps=warmup_steps)


@rule(
    name="ademamix",
    slots={
        "m1": Slot(dtype_arg="mu_dtype"),
        "m2": Slot(dtype_arg="mu_dtype"),
        "nu": Slot(dtype_arg="mu_dtype", square=True),
    },
    per_leaf={"mask": True},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "b3": "[0, 1)",
        "alpha": ">= 0",
        "eps": ">= 0",
        "eps_root": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "b3",
        "alpha",
        "eps",
        "eps_root",
        "mu_dtype",
        "weight_decay",
        "mask",
    ),
)
def ademamix(
    grad: Array,
    m1: Array,
    m2: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: Scalar = 0.9999,
    alpha: Scalar = 5.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array, Array]:
    r"""AdEMAMix: AdamW whose first moment mixes a fast and a slow average.

    A drop-in for ``optax.contrib.ademamix`` (same arguments, defaults and
    numbers). As in optax, ``mu_dtype`` is the storage dtype of all three
    moments (``m1``, ``m2`` and ``nu``). The slow average keeps
    gradients for about ``1 / (1 - b3)`` steps (10,000 by default), so the
    rule pays off on long runs.

    Update::

        m1_t = b1 * m1_{t-1} + (1 - b1) * g_t               (fast)
        m2_t = b3_t * m2_{t-1} + (1 - b3_t) * g_t           (slow, not bias-corrected)
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|**2
        u_t = -lr_t * ((m1_t / (1 - b1**t) + alpha_t * m2_t)
                       / (sqrt(v_t / (1 - b2**t) + eps_root) + eps)
                       + wd_t * theta_{t-1})

    where the ``wd_t * theta`` term applies only to leaves selected by ``mask``.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the fast average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        b3: decay of the slow average, in [0, 1); a number or a schedule.
        alpha: weight of the slow average, a number or a schedule.
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root.
        mu_dtype: storage dtype of the three moments (default: the
            parameter's).
        weight_decay: decay rate ``wd``, multiplied by the learning rate.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the gradients returning one: which leaves are decayed. ``None``
            decays every leaf.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import ademamix
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = ademamix(1e-2, b3=0.5, alpha=2.0)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # (1 + 2 * 0.5) / 1, times -lr
        Array([-0.02,  0.02], dtype=float32)

    References:
        Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better,
        Faster, Older", ICLR 2025. The paper warms ``alpha`` and ``b3`` up
        with schedulers; here, as in optax, they are constants unless given
        schedules (evaluated at the step count):
        :func:`ademamix_alpha_scheduler` and :func:`ademamix_b3_scheduler`
        are the paper's. Verified against ``optax.contrib.ademamix`` and
        ``pytorch_optimizer.AdEMAMix`` 4.1.0 (its ``t_alpha_beta3`` is both
        schedulers; its ``weight_decouple=True`` is this rule's decay).
    """
    m1 = (1 - b1) * grad + b1 * m1
    m2 = (1 - b3) * grad + b3 * m2
    nu = (1 - b2) * abs_sq(grad) + b2 * nu
    m1_hat = m1 / (1 - b1**step)
    nu_hat = nu / (1 - b2**step)
    direction = (alpha * m2 + m1_hat) / (jnp.sqrt(nu_hat + eps_root) + eps)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, m1, m2, nu


SPEC = RuleSpec(
    name="ademamix",
    factory=ademamix,
    hyperparams={"learning_rate": 1e-2, "b3": 0.999},
    reference="optax.contrib.ademamix",
    reference_factory=optax.contrib.ademamix,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "b3": 0.995, "alpha": 3.0},
        {
            "learning_rate": 1e-2,
            "b3": optax.linear_schedule(0.9, 0.999, 50),
            "alpha": optax.linear_schedule(0.0, 5.0, 50),
            "eps_root": 1e-8,
        },
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "eps": 1e-6},
    ),
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.AdEMAMix",
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "b3": 0.999,
                    "alpha": 2.0,
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                },
                {
                    "lr": 1e-2,
                    "betas": (0.8, 0.99, 0.999),
                    "alpha": 2.0,
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                    "weight_decouple": True,
                },
            ),
            (
                {
                    "learning_rate": 1e-2,
                    "alpha": ademamix_alpha_scheduler(5.0, 50),
                    "b3": ademamix_b3_scheduler(0.9, 0.9999, 50),
                },
                {"lr": 1e-2, "t_alpha_beta3": 50},
            ),
        ),
    ),
)
