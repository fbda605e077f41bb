"""LaProp: momentum of RMS-normalised gradients (Adam with the order swapped)."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


SQ_EPS = 1e-15
"""Added to the second moment under the root, as pytorch-optimizer does (its
LaProp and MARS)."""


@rule(
    name="laprop",
    slots={
        "nu": Slot(square=True),
        "mean": Slot(when="centered"),
        "nu_max": Slot(when="amsgrad", square=True),
        "lr_avg": Slot(per_tree=True),
    },
    static=("steps_before_centered",),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
        "steps_before_centered": ">= 0",
    },
)
def laprop(
    grad: Array,
    mu: Array,
    nu: Array,
    mean: Array | None,
    nu_max: Array | None,
    lr_avg: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 4e-4,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-15,
    weight_decay: Scalar = 0.0,
    fixed_decay: bool = False,
    centered: bool = False,
    steps_before_centered: int = 10,
    amsgrad: bool = False,
) -> tuple[Array, Array, Array, Array | None, Array | None, Array]:
    r"""LaProp: momentum of the RMS-normalised gradient, then the step.

    Adam averages gradients, then divides by the root of the second moment;
    LaProp divides each gradient first and averages the quotients, so the
    momentum and the adaptivity decouple (any ``b1``, ``b2`` pair is
    stable). The bias correction of the momentum is the average learning rate
    (exact for a learning-rate schedule); weight decay is decoupled and
    applied after the step, as in the reference.

    Update::

        v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        s_t = v_t  (centered, after steps_before_centered steps:
                    v_t - a_t**2, a_t = b2 * a_{t-1} + (1 - b2) * g_t;
                    amsgrad: the running maximum of s)
        d_t = (sqrt(s_t + 1e-15) + eps) / sqrt(1 - b2**t)
        L_t = b1 * L_{t-1} + (1 - b1) * lr_t
        m_t = b1 * m_{t-1} + (1 - b1) * lr_t * g_t / d_t
        y_t = theta_{t-1} - (lr_t / L_t) * m_t
        theta_t = (1 - wd * lr_t) * y_t      (fixed_decay: 1 - wd)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment, before its bias
            correction.
        weight_decay: decoupled decay rate, applied after the step.
        fixed_decay: decay by ``wd`` instead of ``wd * lr`` (the LaProp
            authors' own code).
        centered: subtract the squared mean gradient from the second moment
            (after ``steps_before_centered`` steps).
        steps_before_centered: steps before the centring starts. Structural.
        amsgrad: divide by the running maximum of the second moment.
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        nu_dtype: storage dtype of ``v`` (likewise).
        mean_dtype: storage dtype of ``a`` (likewise).
        nu_max_dtype: storage dtype of the running maximum (likewise).
        lr_avg_dtype: storage dtype of ``L`` (default: the lowest floating
            dtype of the parameters).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import laprop
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = laprop(learning_rate=0.1)
        >>> grads = {"w": jnp.array([2.0, -0.5])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # the first step: -lr * sign(g)
        Array([-0.10000002,  0.10000002], dtype=float32)

    References:
        Ziyin, Wang and Ueda, "LaProp: Separating Momentum and Adaptivity in
        Adam", arXiv:2002.04839, 2020. Verified against
        ``pytorch_optimizer.LaProp`` 4.1.0, whose ``1e-15`` under the root
        and ``eps`` before the bias correction this rule keeps (the authors'
        repository adds ``eps`` after it and decays by ``wd``, not ``wd * lr``:
        ``fixed_decay``).
    """
    nu = (1 - b2) * (grad * grad) + b2 * nu
    second = nu
    if mean is not None:
        mean = mean + (1 - b2) * (grad - mean)
        second = jnp.where(step > steps_before_centered, nu - mean * mean, nu)
    if nu_max is not None:
        nu_max = jnp.maximum(nu_max, second)
        second = nu_max
    lr_avg = b1 * lr_avg + (1 - b1) * learning_rate
    # (The scalar factors first, then one division of arrays: written as a
    # division by a bias-corrected denominator array, the sharded program
    # rounded one element differently, enough to flip an 8-bit state code.)
    scale = (1 - b1) * learning_rate * jnp.sqrt(1 - b2**step)
    mu = b1 * mu + scale * grad / (jnp.sqrt(second + SQ_EPS) + eps)
    step_size = jnp.where(learning_rate != 0, learning_rate / lr_avg, 1.0)
    moved = param - step_size * mu
    decay = weight_decay * (1.0 if fixed_decay else learning_rate)
    return moved * (1 - decay) - param, mu, nu, mean, nu_max, lr_avg


SPEC = RuleSpec(
    name="laprop",
    factory=laprop,
    hyperparams={"learning_rate": 1e-2},
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.LaProp",
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-8},
                {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-8},
            ),
            (
                {"learning_rate": 1e-2, "centered": True, "amsgrad": True},
                {"lr": 1e-2, "centered": True, "ams_bound": True},
            ),
            (
                {"learning_rate": 1e-2, "weight_decay": 0.1},
                {"lr": 1e-2, "weight_decay": 0.1},
            ),
            (
                {
                    "learning_rate": 1e-2,
                    "weight_decay": 0.01,
                    "fixed_decay": True,
                    "centered": True,
                    "steps_before_centered": 3,
                },
                {
                    "lr": 1e-2,
                    "weight_decay": 0.01,
                    "fixed_decay": True,
                    "centered": True,
                    "steps_before_using_centered": 3,
                },
            ),
        ),
    ),
)
