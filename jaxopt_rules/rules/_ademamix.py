"""AdEMAMix: AdamW with a mixture of a fast and a slow momentum."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


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
        schedules (evaluated at the step count). Verified against
        ``optax.contrib.ademamix``.
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
)
