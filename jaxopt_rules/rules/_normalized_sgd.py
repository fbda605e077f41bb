"""Normalized gradient descent: steps of fixed length along the global gradient."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


def _squared_norm(grad: Array) -> dict[str, Array]:
    return {"grad_sq_norm": jnp.sum(abs_sq(grad))}


@rule(
    name="normalized_sgd",
    global_stats=_squared_norm,
    complex_params=True,
    constraints={"learning_rate": ">= 0", "eps": ">= 0"},
    positional=("learning_rate", "eps"),
)
def normalized_sgd(
    grad: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar,
    eps: Scalar = 1e-6,
) -> Array:
    r"""Normalized gradient descent: every step has length ``learning_rate``.

    The gradient of the whole tree is divided by its global norm, so the step
    length is set by the learning rate alone. This rule needs all leaves at
    once; it shows the core's ``global_stats`` mechanism.

    Update::

        u_t = -lr_t * g_t / (||g_t|| + eps)      (||.|| over all leaves together)

    Args:
        learning_rate: step length, a number or a schedule of the step count.
        eps: added to the norm to avoid dividing by zero.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.normalized_sgd(1.0, eps=0.0)
        >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
        >>> updates, _ = tx.update(grads, tx.init(grads))
        >>> updates["a"], updates["b"]
        (Array([-0.6], dtype=float32), Array([-0.8], dtype=float32))

    References:
        Hazan, Levy and Shalev-Shwartz, "Beyond Convexity: Stochastic
        Quasi-Convex Optimization", NeurIPS 2015. Verified against
        ``optax.chain(optax.normalize_by_update_norm(1.0, eps),
        optax.scale_by_learning_rate(learning_rate))``.
    """
    return -learning_rate * (grad / (jnp.sqrt(stats["grad_sq_norm"]) + eps))


def _normalized_sgd_reference(
    learning_rate: optax.ScalarOrSchedule, eps: float = 1e-6
) -> optax.GradientTransformation:
    return optax.chain(
        optax.normalize_by_update_norm(scale_factor=1.0, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


SPEC = RuleSpec(
    name="normalized_sgd",
    factory=normalized_sgd,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.chain(optax.normalize_by_update_norm, "
    "optax.scale_by_learning_rate)",
    reference_factory=_normalized_sgd_reference,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "eps": 1e-3},
    ),
)
