"""MoMo-Adam: Adam whose step is capped by a model of the loss (Polyak-type)."""

import jax.numpy as jnp
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._momo import truncated_step
from jaxopt_rules.rules._spec import RuleSpec
from jaxopt_rules.rules._tree_sums import inner


def _moments(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    step: Array,
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
) -> tuple[Array, Array, Array]:
    """The new moments and the preconditioner ``eps + sqrt(v_t / (1 - b2**t))``."""
    exp_avg = b1 * exp_avg + (1 - b1) * grad
    exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * grad * grad
    precond = eps + jnp.sqrt(exp_avg_sq / (1 - b2**step))
    return exp_avg, exp_avg_sq, precond


def _sums(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    param: Array,
    step: Array,
    *,
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
) -> dict[str, Array]:
    """One leaf's ``<m_t, m_t / D_t>``, ``<m_t, theta>`` and ``<g_t, theta>``."""
    m, _, precond = _moments(grad, exp_avg, exp_avg_sq, step, b1, b2, eps)
    return {
        "norm": inner(m, m / precond),
        "iprod": inner(m, param),
        "grad_dot_param": inner(grad, param),
    }


@rule(
    name="momo_adam",
    slots={
        "barf": Slot(per_tree=True),
        "gamma": Slot(per_tree=True),
        "lb": Slot(per_tree=True, init="lower_bound"),
    },
    global_stats=_sums,
    extra_args=("value",),
    static=("adapt_lower_bound",),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "eps",
        "lower_bound",
        "weight_decay",
        "adapt_lower_bound",
    ),
)
def momo_adam(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    barf: Array,
    gamma: Array,
    lb: Array,
    value: Array,
    param: Array,
    step: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar = 1e-2,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    lower_bound: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    adapt_lower_bound: bool = False,
) -> tuple[Array, Array, Array, Array, Array, Array]:
    r"""MoMo-Adam: Adam with a step size from a model of the loss.

    A drop-in for ``optax.contrib.momo_adam`` (same arguments, defaults and
    numbers), plus one storage-dtype argument per slot. ``update`` needs the
    loss: ``tx.update(grads, state, params, value=loss)``. The three averages
    of the loss model are scalars for the whole tree.

    Update::

        (sums over the whole tree; a = lr_t, c = 1 + a * wd, k1 = 1 - b1**t)
        m_t, v_t as in Adam;  D_t = eps + sqrt(v_t / (1 - b2**t))
        f_t = b1 * f_{t-1} + (1 - b1) * loss_t                (barf)
        gamma_t = b1 * gamma_{t-1} + (1 - b1) * <g_t, theta_{t-1}>
        tau = min(a / k1, max(c * (f_t - k1 * lb - gamma_t)
                              + <m_t, theta_{t-1}>, 0) / <m_t, m_t / D_t>)
                                        (0 where the denominator <= float64 eps)
        u_t = -(a * wd / c) * theta_{t-1} - tau * m_t / D_t

    With ``adapt_lower_bound`` the bound ``lb`` is re-estimated each step
    from the model (never below ``lower_bound``).

    Args:
        learning_rate: the largest step size; a number or a schedule.
        b1: decay of the first moment and of the loss model's averages.
        b2: decay of the second moment.
        eps: added to the preconditioner.
        lower_bound: a lower bound of the loss (0 for non-negative losses).
        weight_decay: decay rate, applied implicitly (``1 / c``).
        adapt_lower_bound: re-estimate the bound from the model.
        exp_avg_dtype: storage dtype of ``m`` (default: the parameter's).
        exp_avg_sq_dtype: storage dtype of ``v`` (likewise).
        barf_dtype: storage dtype of ``f`` (default: the lowest floating
            dtype of the parameters, as optax).
        gamma_dtype: storage dtype of ``gamma`` (likewise).
        lb_dtype: storage dtype of ``lb`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs
        ``params`` and ``value``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import momo_adam
        >>> params = {"w": jnp.array([0.0, 2.0])}
        >>> tx = momo_adam(learning_rate=1.0)
        >>> grads = {"w": jnp.array([0.0, 2.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params, value=2.0)
        >>> updates["w"]  # tau = 10 (= lr / (1 - b1) here) along -m / D
        Array([-0., -1.], dtype=float32)

    References:
        Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models
        for Adaptive Learning Rates", ICML 2024 (Algorithm 3, MoMo-Adam).
        Verified against ``optax.contrib.momo_adam``.
    """
    exp_avg, exp_avg_sq, precond = _moments(
        grad, exp_avg, exp_avg_sq, step, b1, b2, eps
    )
    barf = b1 * barf + (1 - b1) * value
    gamma = b1 * gamma + (1 - b1) * stats["grad_dot_param"]
    alpha = learning_rate
    tau, new_lb = truncated_step(
        alpha=alpha,
        weight_decay=weight_decay,
        barf=barf,
        gamma=gamma,
        lb=lb,
        iprod=stats["iprod"],
        norm=stats["norm"],
        bias=1 - b1**step,
        lower_bound=lower_bound,
        adapt_lower_bound=adapt_lower_bound,
    )
    decay = alpha * weight_decay / (1 + alpha * weight_decay)
    update = -decay * param - tau * exp_avg / precond
    return update, exp_avg, exp_avg_sq, barf, gamma, new_lb


SPEC = RuleSpec(
    name="momo_adam",
    factory=momo_adam,
    hyperparams={},
    reference="optax.contrib.momo_adam",
    reference_factory=optax.contrib.momo_adam,
    reference_cases=(
        {},
        {"learning_rate": 0.05, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        {"adapt_lower_bound": True, "lower_bound": -2.0, "weight_decay": 0.01},
    ),
)
