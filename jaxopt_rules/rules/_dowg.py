"""DoWG: DoG's step size with the gradients weighted by the distance estimate."""

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec
from jaxopt_rules.rules._tree_sums import decayed, distance_and_grad_sq_norms


def _initial_sq_distance(params: Any, hyper: Mapping[str, Any]) -> Array:
    del params
    given = hyper["init_estim_sq_dist"]
    return jnp.asarray(hyper["eps"] if given is None else given)


@rule(
    name="dowg",
    slots={
        "init_params": Slot(init=lambda p: p),
        "weighted_sq_norm_grads": Slot(per_tree=True),
        "estim_sq_dist": Slot(per_tree=True, init=_initial_sq_distance),
    },
    global_stats=distance_and_grad_sq_norms,
    per_leaf={"mask": True},
    constraints={
        "learning_rate": ">= 0",
        "init_estim_sq_dist": "> 0",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=("learning_rate", "init_estim_sq_dist", "eps", "weight_decay", "mask"),
)
def dowg(
    grad: Array,
    init_params: Array,
    weighted_sq_norm_grads: Array,
    estim_sq_dist: Array,
    param: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar = 1.0,
    init_estim_sq_dist: Scalar | None = None,
    eps: Scalar = 1e-4,
    weight_decay: Scalar | None = None,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array, Array]:
    r"""DoWG: distance over weighted gradients, a step size with no tuning.

    A drop-in for ``optax.contrib.dowg`` (same arguments, defaults and
    numbers), plus ``init_params_dtype``, ``weighted_sq_norm_grads_dtype``
    and ``estim_sq_dist_dtype``. Like :func:`~jaxopt_rules.dog`, one step
    size for the whole tree; each gradient's squared norm enters the sum
    weighted by the current squared-distance estimate. The state holds a copy
    of the initial parameters (kept in full precision by
    :func:`~jaxopt_rules.quantized_state`) and two scalars.

    Update::

        (norms and sums over the whole tree)
        g_t = grad_t + wd * theta_{t-1}                (only where mask, if wd)
        r2_t = max(r2_{t-1}, ||theta_{t-1} - theta_0||**2)
        v_t = v_{t-1} + r2_t * ||g_t||**2
        eta_t = r2_t / (sqrt(v_t) + eps)
        u_t = -lr_t * eta_t * g_t

    with ``r2_0 = init_estim_sq_dist`` (``eps`` when ``None``) and ``v_0 = 0``.

    Args:
        learning_rate: multiplies DoWG's step size; a number or a schedule.
        init_estim_sq_dist: initial guess of the squared distance to the
            solution (``None``: ``eps``).
        eps: added to the denominator of the step size.
        weight_decay: coefficient of ``theta`` added to the gradient
            (``None``: no decay).
        mask: which leaves are decayed (pytree of booleans or a function of the
            params returning one); ``None`` decays every leaf.
        init_params_dtype: storage dtype of the initial parameters (default:
            the parameter's).
        weighted_sq_norm_grads_dtype: storage dtype of ``v`` (default: the
            lowest floating dtype of the parameters, as optax).
        estim_sq_dist_dtype: storage dtype of ``r2`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import dowg
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> tx = dowg(init_estim_sq_dist=4.0, eps=0.0)
        >>> grads = {"w": jnp.array([0.0, 2.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # eta = 4 / sqrt(4 * 4) = 1
        Array([-0., -2.], dtype=float32)

    References:
        Khaled, Mishchenko and Jin, "DoWG Unleashed: An Efficient Universal
        Parameter-Free Gradient Descent Method", NeurIPS 2023 (Algorithm 1).
        Verified against ``optax.contrib.dowg``.
    """
    g = decayed(grad, param, weight_decay, mask)
    estim_sq_dist = jnp.maximum(estim_sq_dist, stats["sq_dist"])
    weighted_sq_norm_grads = weighted_sq_norm_grads + estim_sq_dist * stats["sq_norm"]
    eta = estim_sq_dist / (jnp.sqrt(weighted_sq_norm_grads) + eps)
    return (
        -learning_rate * (eta * g),
        init_params,
        weighted_sq_norm_grads,
        estim_sq_dist,
    )


SPEC = RuleSpec(
    name="dowg",
    factory=dowg,
    hyperparams={},
    reference="optax.contrib.dowg",
    reference_factory=optax.contrib.dowg,
    reference_cases=(
        {},
        {"init_estim_sq_dist": 1e-2, "eps": 1e-6, "learning_rate": 0.5},
        {"weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
