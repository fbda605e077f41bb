"""Schedule-free RAdam: rectified RMS steps, iterate averaging, no warm-up."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._schedule_free import averaging_weight, schedule_free_step
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


def _rectification(step: Array, b2: Scalar) -> tuple[Array, Array]:
    """RAdam's ``rho_t > 4`` (the variance is tractable) and its factor ``r_t``."""
    t = jnp.asarray(step) + 0.0  # (a float as wide as x64 allows)
    power = b2**t
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * power / (1 - power)
    ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    tractable = rho > 4
    return tractable, jnp.sqrt(jnp.where(tractable, ratio, 1.0))


@rule(
    name="schedule_free_radam",
    slots={
        "nu": Slot(square=True),
        "z": Slot(init=lambda p: p, dtype_arg="state_dtype"),
        "weight_sum": Slot(per_tree=True),
        "max_lr": Slot(per_tree=True),
    },
    constraints={
        "learning_rate": ">= 0",
        "b1": "(0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
        "r": ">= 0",
    },
)
def schedule_free_radam(
    grad: Array,
    nu: Array,
    z: Array,
    weight_sum: Array,
    max_lr: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 0.0025,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    r: Scalar = 0.0,
    weight_lr_power: Scalar = 2.0,
    silent_sgd_phase: bool = True,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Schedule-free RAdam: rectified RMS steps on ``z``, parameters near its average.

    The authors' schedule-free RAdam: no warm-up is needed, because RAdam's
    rectification makes the first steps small, and it also sets the weights
    of the average (a step's weight is its rectified rate). Until the
    second moment's variance is tractable (``rho_t <= 4``, the first 5 steps
    at ``b2 = 0.999``) the run only accumulates the second moment
    (``silent_sgd_phase``), or takes plain SGD steps. Evaluate the model at
    :func:`~jaxopt_rules.schedule_free_eval_params`.

    Update::

        rho_inf = 2 / (1 - b2) - 1;  rho_t = rho_inf - 2 t b2**t / (1 - b2**t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf
                   / ((rho_inf - 4)(rho_inf - 2) rho_t))     (rho_t > 4)
            = 0 (silent_sgd_phase) or 1                       (otherwise)
        lr'_t = lr_t * r_t
        v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        d_t = g_t / (sqrt(v_t / (1 - b2**t)) + eps)  (g_t if rho_t <= 4)
              + wd * y_{t-1}
        z_t = z_{t-1} - lr'_t * d_t
        L_t = max(L_{t-1}, lr'_t);  w_t = t**r * L_t**weight_lr_power
        c_t = w_t / (w_1 + ... + w_t)   (0 while every weight is 0)
        x_t = (1 - c_t) * x_{t-1} + c_t * z_t;  y_t = b1 * x_t + (1 - b1) * z_t

    Args:
        learning_rate: step size of ``z`` before the rectification; a number
            or a schedule of the step count.
        b1: interpolation between ``x`` and ``z`` for ``y``, in (0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the bias-corrected second moment.
        weight_decay: coefficient of ``y`` added to the scaled step.
        r: polynomial weighting: the weights are multiplied by ``t**r``.
        weight_lr_power: the averaging weights are ``max_lr**power``.
        silent_sgd_phase: take no step while ``rho_t <= 4`` (the authors'
            default) instead of SGD steps. Structural.
        nu_dtype: storage dtype of the second moment (default: the
            parameter's).
        state_dtype: storage dtype of ``z`` (default: the parameter's).
        weight_sum_dtype: storage dtype of the sum of weights (default: the
            lowest floating dtype of the parameters).
        max_lr_dtype: storage dtype of the largest rate (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import schedule_free_radam
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = schedule_free_radam(learning_rate=0.5)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # the silent phase: no step yet
        Array([0., 0.], dtype=float32)

    References:
        Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, "The Road Less
        Scheduled", NeurIPS 2024; Liu et al., "On the Variance of the Adaptive
        Learning Rate and Beyond", ICLR 2020 (RAdam). Verified against the
        authors' ``schedulefree`` 1.4.1 (``RAdamScheduleFree``).
    """
    tractable, rect = _rectification(step, b2)
    if silent_sgd_phase:
        rect = jnp.where(tractable, rect, 0.0)
    rate = learning_rate * rect
    ck, max_lr, weight_sum = averaging_weight(
        rate, step, max_lr, weight_sum, weight_lr_power, r
    )
    nu = (1 - b2) * (grad * grad) + b2 * nu
    normalised = grad / (jnp.sqrt(nu / (1 - b2**step)) + eps)
    direction = jnp.where(tractable, normalised, grad) + weight_decay * param
    step_z = -rate * direction
    update = schedule_free_step(param, z, step_z, ck, b1)
    return update, nu, z + step_z, weight_sum, max_lr


SPEC = RuleSpec(
    name="schedule_free_radam",
    factory=schedule_free_radam,
    hyperparams={"learning_rate": 1e-2},
    authors=AuthorsReference(
        requirement="schedulefree==1.4.1",
        optimizer="schedulefree.RAdamScheduleFree",
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                    "r": 1.0,
                    "weight_lr_power": 1.0,
                },
                {
                    "lr": 1e-2,
                    "betas": (0.8, 0.99),
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                    "r": 1.0,
                    "weight_lr_power": 1.0,
                },
            ),
            (
                {"learning_rate": 1e-2, "silent_sgd_phase": False},
                {"lr": 1e-2, "silent_sgd_phase": False},
            ),
        ),
    ),
)
