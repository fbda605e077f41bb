"""LAMB: Adam directions rescaled per layer by a trust ratio."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, report, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_direction, adam_moments
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


def _norm(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(abs_sq(x)))


@rule(
    name="lamb",
    slots={"nu": Slot(square=True)},
    per_leaf={"mask": True},
    complex_params=True,
    constraints={**ADAM_CONSTRAINTS, "weight_decay": ">= 0"},
    positional=("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay", "mask"),
)
def lamb(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array]:
    r"""LAMB: layer-wise adaptive moments for large batches.

    A drop-in for ``optax.lamb`` (same arguments, defaults and numbers), plus
    ``mu_dtype`` and ``nu_dtype``. Each leaf is one "layer": its Adam
    direction is rescaled so that its norm matches the parameter's.

    Update::

        m_t, v_t, m_hat, v_hat as in adam
        r_t = m_hat / (sqrt(v_hat + eps_root) + eps) + wd_t * theta_{t-1}
                                                     (the decay term only where mask)
        phi = ||theta_{t-1}|| / ||r_t||          (1 where either norm is 0)
        u_t = -lr_t * phi * r_t

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added inside the square root.
        weight_decay: decoupled decay rate, a number or a schedule.
        mask: which leaves are decayed (pytree of booleans or a function of the
            gradients returning one); ``None`` decays every leaf.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
        Each leaf's trust ratio is reported (:func:`~jaxopt_rules.report`):
        under :func:`~jaxopt_rules.log_step` records carry
        ``trust_ratio/w`` and so on (one key per leaf path).

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.lamb(0.1)
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> grads = {"w": jnp.array([1.0, 0.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]
        Array([-0.5, -0. ], dtype=float32)

    References:
        You et al., "Large Batch Optimization for Deep Learning: Training BERT
        in 76 minutes", ICLR 2020. Verified against ``optax.lamb``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=False
    )
    if mask:
        direction = direction + weight_decay * param
    param_norm, direction_norm = _norm(param), _norm(direction)
    ratio = param_norm / direction_norm
    ratio = jnp.where((param_norm == 0) | (direction_norm == 0), 1.0, ratio)
    report("trust_ratio", ratio)  # free unless log_step listens
    return -learning_rate * (direction * ratio), mu, nu


SPEC = RuleSpec(
    name="lamb",
    reads_whole_leaves=True,
    factory=lamb,
    hyperparams={"learning_rate": 1e-3},
    reference="optax.lamb",
    reference_factory=optax.lamb,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "eps": 1e-8},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
