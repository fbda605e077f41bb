"""Prodigy: Adam whose step size is a running estimate of the distance to go."""

import jax.numpy as jnp
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec
from jaxopt_rules.rules._tree_sums import estimated_step_size, inner


def _beta3(beta2: Scalar, beta3: Scalar | None) -> Scalar:
    return beta2**0.5 if beta3 is None else beta3


def _new_grad_sum(
    grad: Array,
    grad_sum: Array,
    estim_lr: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    beta3: Scalar | None,
    estim_lr0: Scalar,
    safeguard_warmup: bool,
) -> Array:
    scale = (
        estim_lr
        if safeguard_warmup
        else estimated_step_size(estim_lr, learning_rate, step, beta1, beta2)
    )
    return _beta3(beta2, beta3) * grad_sum + scale * (estim_lr * grad) / estim_lr0


def _sums(
    grad: Array,
    param: Array,
    params0: Array,
    grad_sum: Array,
    estim_lr: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    beta3: Scalar | None,
    estim_lr0: Scalar,
    safeguard_warmup: bool,
) -> dict[str, Array]:
    """One leaf's ``<g, theta_0 - theta>`` and ``|s_t|_1`` (summed over the tree)."""
    new = _new_grad_sum(
        grad,
        grad_sum,
        estim_lr,
        step,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        estim_lr0=estim_lr0,
        safeguard_warmup=safeguard_warmup,
    )
    return {
        "numerator": inner(grad, params0 - param),
        "grad_sum_l1": jnp.sum(jnp.abs(new)),
    }


@rule(
    name="prodigy",
    slots={
        "params0": Slot(init=lambda p: p),
        "estim_lr": Slot(per_tree=True, init="estim_lr0"),
        "numerator_weighted": Slot(per_tree=True),
    },
    global_stats=_sums,
    static=("safeguard_warmup",),
    constraints={
        "learning_rate": ">= 0",
        "beta1": "[0, 1)",
        "beta2": "[0, 1)",
        "beta3": "[0, 1)",
        "eps": ">= 0",
        "estim_lr0": "> 0",
        "estim_lr_coef": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "betas",
        "beta3",
        "eps",
        "estim_lr0",
        "estim_lr_coef",
        "weight_decay",
        "safeguard_warmup",
    ),
    grouped={"betas": ("beta1", "beta2")},
)
def prodigy(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    grad_sum: Array,
    params0: Array,
    estim_lr: Array,
    numerator_weighted: Array,
    param: Array,
    step: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar = 1.0,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    beta3: Scalar | None = None,
    eps: Scalar = 1e-8,
    estim_lr0: Scalar = 1e-6,
    estim_lr_coef: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
    safeguard_warmup: bool = False,
) -> tuple[Array, Array, Array, Array, Array, Array, Array]:
    r"""Prodigy: Adam with a learning rate estimated on the fly.

    A drop-in for ``optax.contrib.prodigy`` (same arguments, defaults and
    numbers; ``betas`` is one argument, as there), plus one storage-dtype
    argument per slot. The step-size estimate ``d`` (``estim_lr``) only
    grows; it is one scalar for the whole tree, computed from sums over
    every leaf. The state holds a copy of the initial parameters (kept in
    full precision by :func:`~jaxopt_rules.quantized_state`), three moments
    and two scalars.

    Update::

        (sums over the whole tree; d = d_{t-1})
        dlr = d * lr_t * sqrt(1 - b2**t) / (1 - b1**t)
        m_t = b1 * m_{t-1} + (1 - b1) * d * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * (d * g_t)**2
        s_t = b3 * s_{t-1} + (d / d0) * c * g_t     (c = d with safeguard_warmup,
                                                     else dlr)
        r_t = b3 * r_{t-1} + (d / d0) * dlr * <g_t, theta_0 - theta_{t-1}>
        d_t = max(d, coef * r_t / ||s_t||_1)
        u_t = -dlr * (m_t / (sqrt(v_t) + d_t * eps) + wd * theta_{t-1})

    with ``b3 = sqrt(b2)`` when ``beta3`` is ``None``, ``d0 = estim_lr0``.

    Args:
        learning_rate: multiplies the estimated step size; a number or a
            schedule.
        betas: ``(b1, b2)``, the decays of the two moment averages.
        beta3: decay of ``s`` and ``r`` (``None``: ``sqrt(b2)``).
        eps: added to the root of the second moment (times ``d``).
        estim_lr0: the initial estimate ``d0``.
        estim_lr_coef: multiplies each new estimate.
        weight_decay: decoupled decay rate (applied to every leaf).
        safeguard_warmup: leave the schedule and bias correction out of
            ``s`` (the authors' remedy for warm-up schedules).
        exp_avg_dtype: storage dtype of ``m`` (default: the parameter's).
        exp_avg_sq_dtype: storage dtype of ``v`` (likewise).
        grad_sum_dtype: storage dtype of ``s`` (likewise).
        params0_dtype: storage dtype of the initial parameters (likewise).
        estim_lr_dtype: storage dtype of ``d`` (default: the lowest floating
            dtype of the parameters, as optax).
        numerator_weighted_dtype: storage dtype of ``r`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import prodigy
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = prodigy(estim_lr0=0.1)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # about -d0 * lr * sign(g), as Adam's first step
        Array([-0.09999997,  0.09999997], dtype=float32)

    References:
        Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive
        Parameter-Free Learner", ICML 2024 (Algorithm 4, Adam version).
        Verified against ``optax.contrib.prodigy``.
    """
    b3 = _beta3(beta2, beta3)
    dlr = estimated_step_size(estim_lr, learning_rate, step, beta1, beta2)
    dg = estim_lr * grad
    exp_avg = beta1 * exp_avg + (1 - beta1) * dg
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * dg * dg
    grad_sum = _new_grad_sum(
        grad,
        grad_sum,
        estim_lr,
        step,
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        estim_lr0=estim_lr0,
        safeguard_warmup=safeguard_warmup,
    )
    numerator_weighted = (
        b3 * numerator_weighted + (estim_lr / estim_lr0) * dlr * stats["numerator"]
    )
    new_estim_lr = jnp.maximum(
        estim_lr, estim_lr_coef * numerator_weighted / stats["grad_sum_l1"]
    )
    # (eps is scaled by the new estimate, as in optax; dlr by the old one.)
    update = -weight_decay * dlr * param - dlr * exp_avg / (
        jnp.sqrt(exp_avg_sq) + new_estim_lr * eps
    )
    return (
        update,
        exp_avg,
        exp_avg_sq,
        grad_sum,
        params0,
        new_estim_lr,
        numerator_weighted,
    )


SPEC = RuleSpec(
    name="prodigy",
    factory=prodigy,
    # (At learning_rate=1 the kit's Rosenbrock run reaches the valley floor,
    # then overshoots: the estimate only grows.)
    hyperparams={"learning_rate": 0.1},
    reference="optax.contrib.prodigy",
    reference_factory=optax.contrib.prodigy,
    reference_cases=(
        # (First: a larger d0, so the framework and wrapper checks, which run
        # this case, see the parameters move within their few steps.)
        {"estim_lr0": 1e-2},
        {},
        {"betas": (0.8, 0.99), "beta3": 0.9, "eps": 1e-6, "estim_lr0": 1e-4},
        {"weight_decay": 0.1, "estim_lr_coef": 0.5, "learning_rate": 0.5},
        {
            "safeguard_warmup": True,
            "learning_rate": optax.linear_schedule(0.1, 1.0, 50),
        },
    ),
)
