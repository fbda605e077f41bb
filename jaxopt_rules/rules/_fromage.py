"""Fromage: steps of a fixed size relative to each layer, then a shrink."""

import jax
import optax

from jaxopt_rules._core import Array, Scalar, report, rule
from jaxopt_rules.rules._lars import trust_ratio
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="fromage",
    complex_params=True,
    constraints={"learning_rate": ">= 0", "min_norm": ">= 0"},
    positional=("learning_rate", "min_norm"),
)
def fromage(
    grad: Array,
    param: Array,
    *,
    learning_rate: Scalar,
    min_norm: Scalar = 1e-6,
) -> Array:
    r"""Fromage: Frobenius-matched gradient descent, one relative step per layer.

    A drop-in for ``optax.fromage`` (same arguments, defaults and numbers).
    Each leaf is one "layer": it moves by ``learning_rate`` times its own norm
    along its gradient's direction, and is then shrunk so that its norm does
    not grow. It keeps no state besides the step count.

    Update::

        n(x) = max(||x||, min_norm)                (||.|| over the whole leaf)
        phi  = n(theta_{t-1}) / n(g_t)             (1 where either is 0)
        c_t  = 1 / sqrt(1 + lr_t**2)
        u_t  = -lr_t * c_t * phi * g_t + (c_t - 1) * theta_{t-1}

    Args:
        learning_rate: relative step size, a number or a schedule of the step
            count.
        min_norm: lower bound of both norms, so that a zero parameter or
            gradient gives a finite ratio.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
        Each leaf's ratio ``phi`` is reported (:func:`~jaxopt_rules.report`) as
        ``trust_ratio`` under :func:`~jaxopt_rules.log_step`.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.fromage(0.75)
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> grads = {"w": jnp.array([0.0, 2.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> [round(float(u), 4) for u in updates["w"]]  # theta / 1.25 - theta - 1.5 * g
        [-0.6, -3.8]

    References:
        Bernstein, Vahdat, Yue and Liu, "On the distance between two neural
        networks and the stability of learning", NeurIPS 2020.
        Verified against ``optax.fromage``. The paper's update is ``theta <- (theta -
        lr * ||theta|| / ||g|| * g) / sqrt(1 + lr**2)``; optax (and this
        drop-in) bounds both norms below by ``min_norm``, so with the default
        a zero parameter takes a step of size ``lr * c * min_norm`` rather
        than the ratio 1 of the unbounded case.
    """
    # The barrier keeps XLA from fusing 1 / sqrt into rsqrt, which rounds
    # differently from optax's Python-float arithmetic.
    scale = 1 / jax.lax.optimization_barrier((1 + learning_rate**2) ** 0.5)
    ratio = trust_ratio(param, grad, min_norm=min_norm, trust_coefficient=1.0, eps=0.0)
    report("trust_ratio", ratio)  # free unless log_step listens
    return -(learning_rate * scale) * (grad * ratio) + (scale - 1) * param


SPEC = RuleSpec(
    name="fromage",
    reads_whole_leaves=True,
    factory=fromage,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.fromage",
    reference_factory=optax.fromage,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 0.1, "min_norm": 1e-3},
    ),
)
