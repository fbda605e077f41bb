"""LARS: SGD with momentum, each layer's step scaled by a trust ratio."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, report, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


def trust_ratio(
    param: Array,
    update: Array,
    *,
    min_norm: Scalar,
    trust_coefficient: Scalar,
    eps: Scalar,
) -> Array:
    """``trust_coefficient * ||param|| / (||update|| + eps)`` for one leaf, as in optax.

    Both norms (over the whole leaf) are raised to ``min_norm`` first; where
    either is then zero the ratio is 1, so such a leaf keeps its update.
    """
    param_norm = jnp.linalg.norm(param)
    update_norm = jnp.linalg.norm(update)
    param_norm = jnp.where(param_norm <= min_norm, min_norm, param_norm)
    update_norm = jnp.where(update_norm <= min_norm, min_norm, update_norm)
    ratio = trust_coefficient * param_norm / (update_norm + eps)
    return jnp.where((param_norm == 0) | (update_norm == 0), 1.0, ratio)


@rule(
    name="lars",
    slots={"trace": Slot()},
    per_leaf={"weight_decay_mask": True, "trust_ratio_mask": True},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "weight_decay": ">= 0",
        "trust_coefficient": ">= 0",
        "eps": ">= 0",
        "momentum": ">= 0",
    },
    positional=(
        "learning_rate",
        "weight_decay",
        "weight_decay_mask",
        "trust_coefficient",
        "eps",
        "trust_ratio_mask",
        "momentum",
        "nesterov",
    ),
)
def lars(
    grad: Array,
    trace: Array,
    param: Array,
    *,
    learning_rate: Scalar,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Any | Callable[[optax.Params], Any] = True,
    trust_coefficient: Scalar = 0.001,
    eps: Scalar = 0.0,
    trust_ratio_mask: Any | Callable[[optax.Params], Any] = True,
    momentum: Scalar = 0.9,
    nesterov: bool = False,
) -> tuple[Array, Array]:
    r"""LARS: layer-wise trust ratios for large-batch SGD with momentum.

    A drop-in for ``optax.lars`` (same arguments, defaults and numbers), plus
    ``trace_dtype``. Each leaf is one "layer": its (decayed) gradient is
    rescaled so that its norm is ``trust_coefficient`` times the parameter's.

    Update::

        d_t = g_t + wd_t * theta_{t-1}          (the decay where weight_decay_mask)
        phi = tc * ||theta_{t-1}|| / (||d_t|| + eps)
                                                (1 where either norm is 0, or
                                                 where not trust_ratio_mask)
        s_t = -lr_t * phi * d_t
        m_t = s_t + momentum * m_{t-1},    m_0 = 0
        u_t = m_t                          (nesterov: s_t + momentum * m_t)

    The momentum accumulates steps already scaled by the learning rate (as in
    optax and the paper), so a learning-rate schedule acts on new steps only.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        weight_decay: weight decay rate, a number or a schedule.
        weight_decay_mask: which leaves are decayed (pytree of booleans, a
            prefix of the parameters', or a function of the gradients
            returning one); ``True`` decays every leaf.
        trust_coefficient: ``tc``, the trust ratio's multiplier.
        eps: added to the update's norm in the trust ratio.
        trust_ratio_mask: which leaves are rescaled by the trust ratio (same
            forms as ``weight_decay_mask``); the others keep ``d_t``.
        momentum: decay of the momentum trace.
        nesterov: use Nesterov's look-ahead form of momentum.
        trace_dtype: storage dtype of the momentum (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
        Each rescaled leaf's trust ratio is reported
        (:func:`~jaxopt_rules.report`): under :func:`~jaxopt_rules.log_step`
        records carry ``trust_ratio/w`` and so on (one key per leaf path).

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.lars(1.0, trust_coefficient=0.1)
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> grads = {"w": jnp.array([1.0, 0.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # |update| = 0.1 * |params|
        Array([-0.5,  0. ], dtype=float32)

    References:
        You, Gitman and Ginsburg, "Large Batch Training of Convolutional
        Networks", 2017. Verified against ``optax.lars``. The paper's trust
        ratio is ``tc * ||theta|| / (||g|| + wd * ||theta||)``; optax (and
        this drop-in) divides by the norm of ``g + wd * theta`` (plus ``eps``)
        instead, and lets masks exempt leaves from the decay and the ratio.
    """
    direction = grad + weight_decay * param if weight_decay_mask else grad
    if trust_ratio_mask:
        ratio = trust_ratio(
            param, direction, min_norm=0.0, trust_coefficient=trust_coefficient, eps=eps
        )
        report("trust_ratio", ratio)  # free unless log_step listens
        direction = direction * ratio
    scaled = -learning_rate * direction
    trace = scaled + momentum * trace
    update = scaled + momentum * trace if nesterov else trace
    return update, trace


_TRUST_RATIO_MASK = {
    "dense": True,
    "conv": False,
    "scale": True,
    "frozen": None,
}


SPEC = RuleSpec(
    name="lars",
    reads_whole_leaves=True,
    factory=lars,
    hyperparams={"learning_rate": 1.0},
    reference="optax.lars",
    reference_factory=optax.lars,
    reference_cases=(
        {"learning_rate": 0.5},
        {"learning_rate": 0.5, "weight_decay": 0.1, "nesterov": True, "eps": 1e-3},
        {
            "learning_rate": 0.5,
            "weight_decay": 0.1,
            "weight_decay_mask": WEIGHT_DECAY_MASK,
            "trust_ratio_mask": _TRUST_RATIO_MASK,
            "trust_coefficient": 0.01,
            "momentum": 0.5,
        },
    ),
)
