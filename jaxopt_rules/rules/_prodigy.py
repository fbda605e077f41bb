"""Prodigy: Adam whose step size is a running estimate of the distance to go."""

import jax.numpy as jnp
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec
from jaxopt_rules.rules._tree_sums import decayed, estimated_step_size, inner


def _beta3(beta2: Scalar, beta3: Scalar | None) -> Scalar:
    return beta2**0.5 if beta3 is None else beta3


def _step_size(
    estim_lr: Array,
    learning_rate: Scalar,
    step: Array,
    beta1: Scalar,
    beta2: Scalar,
    bias_correction: bool,
) -> Array:
    """``dlr``: with Adam's bias correction (optax) or without (the authors')."""
    if bias_correction:
        return estimated_step_size(estim_lr, learning_rate, step, beta1, beta2)
    return estim_lr * learning_rate


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
    bias_correction: bool,
) -> Array:
    scale = (
        estim_lr
        if safeguard_warmup
        else _step_size(estim_lr, learning_rate, step, beta1, beta2, bias_correction)
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
    weight_decay: Scalar,
    safeguard_warmup: bool,
    bias_correction: bool,
    decouple: bool,
) -> dict[str, Array]:
    """One leaf's ``<g, theta_0 - theta>`` and ``|s_t|_1`` (summed over the tree)."""
    grad = decayed(grad, param, weight_decay, not decouple)
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
        bias_correction=bias_correction,
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
    static=("safeguard_warmup", "bias_correction", "decouple"),
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
    bias_correction: bool = True,
    decouple: bool = True,
) -> tuple[Array, Array, Array, Array, Array, Array, Array]:
    r"""Prodigy: Adam with a learning rate estimated on the fly.

    A drop-in for ``optax.contrib.prodigy`` (same arguments, defaults and
    numbers; ``betas`` is one argument, as there), plus one storage-dtype
    argument per slot, and the authors' options optax lacks
    (``bias_correction``, ``decouple``): ``bias_correction=False`` gives the
    numbers of the authors' ``prodigyopt.Prodigy`` with its defaults. The step-
    size estimate ``d`` (``estim_lr``) only grows; it is one scalar for the
    whole tree, computed from sums over every leaf. The state holds a copy of
    the initial parameters (kept in full precision by
    :func:`~jaxopt_rules.quantized_state`), three moments and two scalars.

    Update::

        (sums over the whole tree; d = d_{t-1})
        g_t <- g_t + wd * theta_{t-1}                (only if not decouple)
        dlr = d * lr_t * sqrt(1 - b2**t) / (1 - b1**t)  (d * lr_t without
                                                       bias_correction)
        m_t = b1 * m_{t-1} + (1 - b1) * d * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * (d * g_t)**2
        s_t = b3 * s_{t-1} + (d / d0) * c * g_t     (c = d with safeguard_warmup,
                                                     else dlr)
        r_t = b3 * r_{t-1} + (d / d0) * dlr * <g_t, theta_0 - theta_{t-1}>
        d_t = max(d, coef * r_t / ||s_t||_1)
        u_t = -dlr * (m_t / (sqrt(v_t) + d_t * eps) + wd * theta_{t-1})
                                        (the wd term only if decouple)

    with ``b3 = sqrt(b2)`` when ``beta3`` is ``None``, ``d0 = estim_lr0``.

    Args:
        learning_rate: multiplies the estimated step size; a number or a
            schedule.
        betas: ``(b1, b2)``, the decays of the two moment averages.
        beta3: decay of ``s`` and ``r`` (``None``: ``sqrt(b2)``).
        eps: added to the root of the second moment (times ``d``).
        estim_lr0: the initial estimate ``d0``.
        estim_lr_coef: multiplies each new estimate.
        weight_decay: decay rate (applied to every leaf): decoupled (AdamW's)
            or added to the gradient, as ``decouple`` says.
        safeguard_warmup: leave the schedule and bias correction out of
            ``s`` (the authors' remedy for warm-up schedules).
        bias_correction: Adam's bias correction in ``dlr`` (optax: always;
            the authors' ``prodigyopt``: off by default,
            ``use_bias_correction``). Structural.
        decouple: decoupled weight decay (optax's, and the authors'
            default); ``False`` adds ``weight_decay * theta`` to the
            gradient instead. Structural.
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
        Verified against ``optax.contrib.prodigy`` and the authors'
        ``prodigyopt`` 1.1.2 (``Prodigy``; not its ``slice_p`` subsampling,
        nor a finite ``growth_rate``; it skips a step whose ``||s_t||_1`` is
        0, where this rule divides by it).
    """
    b3 = _beta3(beta2, beta3)
    dlr = _step_size(estim_lr, learning_rate, step, beta1, beta2, bias_correction)
    grad = decayed(grad, param, weight_decay, not decouple)
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
        bias_correction=bias_correction,
    )
    numerator_weighted = (
        b3 * numerator_weighted + (estim_lr / estim_lr0) * dlr * stats["numerator"]
    )
    new_estim_lr = jnp.maximum(
        estim_lr, estim_lr_coef * numerator_weighted / stats["grad_sum_l1"]
    )
    # (eps is scaled by the new estimate, as in optax; dlr by the old one.)
    decay = weight_decay * dlr * param if decouple else 0.0
    update = -decay - dlr * exp_avg / (jnp.sqrt(exp_avg_sq) + new_estim_lr * eps)
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
    authors=AuthorsReference(
        requirement="prodigyopt==1.1.2",
        optimizer="prodigyopt.Prodigy",
        # float64 only: the authors' float32 run leaves their own float64 run
        # by 57-69% after 100 steps on the test problem (d is a running
        # maximum of ratios of sums with cancellation, so a float32 rounding
        # early on changes every later step), so a float32 comparison there
        # verifies nothing. In float64 this rule is within 1.6e-11 of it,
        # where nudging the start by one part in 1e15 moves the reference by
        # 1.4e-10.
        tolerance={"float64": 1e-10},
        cases=(
            ({"bias_correction": False}, {}),
            (
                {
                    "learning_rate": 0.5,
                    "betas": (0.8, 0.99),
                    "beta3": 0.9,
                    "estim_lr0": 1e-3,
                    "estim_lr_coef": 2.0,
                    "weight_decay": 0.1,
                },
                {
                    "lr": 0.5,
                    "betas": (0.8, 0.99),
                    "beta3": 0.9,
                    "d0": 1e-3,
                    "d_coef": 2.0,
                    "weight_decay": 0.1,
                    "use_bias_correction": True,
                },
            ),
            (
                {
                    "bias_correction": False,
                    "decouple": False,
                    "weight_decay": 0.05,
                    "safeguard_warmup": True,
                    "eps": 1e-6,
                },
                {
                    "decouple": False,
                    "weight_decay": 0.05,
                    "safeguard_warmup": True,
                    "eps": 1e-6,
                },
            ),
        ),
    ),
)
