"""MoMo: momentum SGD whose step is capped by a model of the loss (Polyak-type)."""

import jax.numpy as jnp
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec
from jaxopt_rules.rules._tree_sums import inner


def first_step_beta(beta: Scalar, step: Array) -> Array:
    """``beta``, except 0 at the first step (the averages start at the first values)."""
    return jnp.where(step == 1, 0.0, beta)


def truncated_step(
    *,
    alpha: Scalar,
    weight_decay: Scalar,
    barf: Array,
    gamma: Array,
    lb: Array,
    iprod: Array,
    norm: Array,
    bias: Array | float,
    lower_bound: Scalar,
    adapt_lower_bound: bool,
) -> tuple[Array, Array]:
    """MoMo's step size ``tau`` and the next lower bound (optax's order of terms)."""
    decay = 1 + alpha * weight_decay
    this_lb = lb
    if adapt_lower_bound:
        cap = decay * (barf - gamma) + iprod
        this_lb = jnp.where(
            cap < decay * bias * lb,
            jnp.maximum(cap / (2 * bias * decay), lower_bound),
            lb,
        )
    t1 = jnp.maximum(decay * (barf - bias * this_lb - gamma) + iprod, 0.0) / norm
    t1 = jnp.where(norm <= jnp.finfo(float).eps, 0.0, t1)
    tau = jnp.minimum(alpha / bias, t1)
    new_lb = lb
    if adapt_lower_bound:
        new_lb = jnp.maximum(
            ((barf + iprod - gamma) - 0.5 * tau * norm) / bias, lower_bound
        )
    return tau, new_lb


def _sums(
    grad: Array, exp_avg: Array, param: Array, step: Array, *, beta: Scalar
) -> dict[str, Array]:
    """One leaf's ``|m_t|**2``, ``<m_t, theta>`` and ``<g_t, theta>``."""
    bt = first_step_beta(beta, step)
    m = bt * exp_avg + (1 - bt) * grad
    return {
        "norm": jnp.sum(m * m),
        "iprod": inner(m, param),
        "grad_dot_param": inner(grad, param),
    }


@rule(
    name="momo",
    slots={
        "barf": Slot(per_tree=True),
        "gamma": Slot(per_tree=True),
        "lb": Slot(per_tree=True, init="lower_bound"),
    },
    global_stats=_sums,
    extra_args=("value",),
    static=("adapt_lower_bound",),
    constraints={"learning_rate": ">= 0", "beta": "[0, 1)", "weight_decay": ">= 0"},
    positional=(
        "learning_rate",
        "beta",
        "lower_bound",
        "weight_decay",
        "adapt_lower_bound",
    ),
)
def momo(
    grad: Array,
    exp_avg: Array,
    barf: Array,
    gamma: Array,
    lb: Array,
    value: Array,
    param: Array,
    step: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar = 1.0,
    beta: Scalar = 0.9,
    lower_bound: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    adapt_lower_bound: bool = False,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""MoMo: momentum SGD with a step size from a model of the loss.

    A drop-in for ``optax.contrib.momo`` (same arguments, defaults and
    numbers), plus one storage-dtype argument per slot. ``update`` needs the
    loss: ``tx.update(grads, state, params, value=loss)``. The step is
    the learning rate, or less where a lower bound of the loss (``lower_bound``,
    0 for most losses) says the model would overshoot it; the three
    averages of the loss model are scalars for the whole tree.

    The kit's jit-versus-eager check fails for this rule as for
    ``optax.contrib.momo``, with the same numbers: where the step size's
    numerator cancels, last-ulp differences between compiled programs grow
    to about 4e-6 of a step. With 4-bit state the cap is noise near a
    minimum (on the kit's Rosenbrock problem the run stops 0.47 from it);
    store the moment in 8 bits, bfloat16 or full precision instead.

    Update::

        (sums over the whole tree; b = 0 at the first step, else beta;
         a = lr_t, c = 1 + a * wd)
        m_t = b * m_{t-1} + (1 - b) * g_t
        f_t = b * f_{t-1} + (1 - b) * loss_t                 (barf)
        gamma_t = b * gamma_{t-1} + (1 - b) * <g_t, theta_{t-1}>
        tau = min(a, max(c * (f_t - lb - gamma_t) + <m_t, theta_{t-1}>, 0)
                     / ||m_t||**2)          (0 where ||m_t||**2 <= float64 eps)
        u_t = -(a * wd / c) * theta_{t-1} - tau * m_t

    With ``adapt_lower_bound`` the bound ``lb`` is re-estimated each step
    from the model (never below ``lower_bound``).

    Args:
        learning_rate: the largest step size; a number or a schedule.
        beta: decay of the averages.
        lower_bound: a lower bound of the loss (0 for non-negative losses).
        weight_decay: decay rate, applied implicitly (``1 / c``).
        adapt_lower_bound: re-estimate the bound from the model.
        exp_avg_dtype: storage dtype of ``m`` (default: the parameter's).
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
        >>> from jaxopt_rules import momo
        >>> params = {"w": jnp.array([0.0, 2.0])}
        >>> tx = momo(learning_rate=10.0)
        >>> grads = {"w": jnp.array([0.0, 2.0])}  # of the loss |w|**2 / 2 = 2
        >>> updates, _ = tx.update(grads, tx.init(params), params, value=2.0)
        >>> updates["w"]  # the Polyak step (2 - 0 - 4 + 4) / 4 = 0.5 along -g
        Array([-0., -1.], dtype=float32)

    References:
        Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models
        for Adaptive Learning Rates", ICML 2024 (Algorithm 1 and the
        lower-bound estimate of its Section 5).
        Verified against ``optax.contrib.momo``.
    """
    bt = first_step_beta(beta, step)
    exp_avg = bt * exp_avg + (1 - bt) * grad
    barf = bt * barf + (1 - bt) * value
    gamma = bt * gamma + (1 - bt) * stats["grad_dot_param"]
    alpha = learning_rate
    tau, new_lb = truncated_step(
        alpha=alpha,
        weight_decay=weight_decay,
        barf=barf,
        gamma=gamma,
        lb=lb,
        iprod=stats["iprod"],
        norm=stats["norm"],
        bias=1.0,
        lower_bound=lower_bound,
        adapt_lower_bound=adapt_lower_bound,
    )
    decay = alpha * weight_decay / (1 + alpha * weight_decay)
    update = -decay * param - tau * exp_avg
    return update, exp_avg, barf, gamma, new_lb


SPEC = RuleSpec(
    name="momo",
    factory=momo,
    hyperparams={},
    reference="optax.contrib.momo",
    reference_factory=optax.contrib.momo,
    reference_cases=(
        {},
        {"learning_rate": 0.5, "beta": 0.8, "lower_bound": -1.0, "weight_decay": 0.1},
        {"adapt_lower_bound": True, "lower_bound": -2.0},
        {"adapt_lower_bound": True, "weight_decay": 0.01, "learning_rate": 0.3},
    ),
)
