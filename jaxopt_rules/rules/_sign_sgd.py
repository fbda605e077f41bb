"""SignSGD: steps of fixed size along the sign of each gradient component."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="sign_sgd",
    constraints={"learning_rate": ">= 0"},
    positional=("learning_rate",),
)
def sign_sgd(grad: Array, *, learning_rate: Scalar) -> Array:
    r"""SignSGD: every component moves by ``learning_rate`` against its gradient's sign.

    A drop-in for ``optax.sign_sgd`` (same arguments and numbers). It keeps no
    state besides the step count; a component whose gradient is exactly zero
    does not move.

    Update::

        u_t = -lr_t * sign(g_t)          (sign(0) = 0)

    Args:
        learning_rate: step size, a number or a schedule of the step count.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.sign_sgd(0.1)
        >>> grads = {"w": jnp.array([3.0, -0.01, 0.0])}
        >>> updates, _ = tx.update(grads, tx.init(grads))
        >>> updates["w"]
        Array([-0.1,  0.1, -0. ], dtype=float32)

    References:
        Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex
        Problems", ICML 2018. Balles et al., "The Geometry of Sign Gradient
        Descent", 2020. Verified against ``optax.sign_sgd``.
    """
    return -learning_rate * jnp.sign(grad)


SPEC = RuleSpec(
    name="sign_sgd",
    factory=sign_sgd,
    # A fixed sign step zigzags across Rosenbrock's valley at the scale of the
    # step: reaching the minimum within the kit's 3e-2 takes a small step.
    hyperparams={"learning_rate": 3e-5},
    convergence_steps=400_000,
    reference="optax.sign_sgd",
    reference_factory=optax.sign_sgd,
    reference_cases=({"learning_rate": 1e-2},),
)
