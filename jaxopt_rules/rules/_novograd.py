"""NovoGrad: per-layer second moments, gradients normalised layer by layer."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


def _scalar(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One second moment per leaf."""
    del shape
    return ()


@rule(
    name="novograd",
    slots={"nu": Slot(square=True, shape=_scalar)},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "eps_root": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"),
)
def novograd(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.25,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
) -> tuple[Array, Array, Array]:
    r"""NovoGrad: momentum of gradients normalised by a per-layer second moment.

    A drop-in for ``optax.novograd`` (same arguments, defaults and numbers),
    plus ``mu_dtype`` and ``nu_dtype``. Each leaf is one "layer" with one
    second moment, a scalar: the state is about half of Adam's.

    Update::

        v_t = ||g_t||**2                                  (t = 1)
              b2 * v_{t-1} + (1 - b2) * ||g_t||**2        (t > 1)
        d_t = g_t / (sqrt(v_t + eps_root) + eps) + wd * theta_{t-1}
        m_t = d_t                                         (t = 1)
              b1 * m_{t-1} + d_t                          (t > 1)
        u_t = -lr_t * m_t

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum, in [0, 1) (the new term is not scaled by
            ``1 - b1``).
        b2: decay of the per-layer second moment, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added inside the square root.
        weight_decay: weight decay rate, added to the normalised gradient.
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        nu_dtype: storage dtype of the per-layer second moments (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.novograd(0.1, eps=0.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.0, 2.0])}, state, params)
        >>> updates["w"], state.nu["w"]  # g / ||g||, and ||g||**2
        (Array([-0. , -0.1], dtype=float32), Array(4., dtype=float32))

    References:
        Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive
        Moments for Training of Deep Networks", 2019. Li et al., "Jasper: An
        End-to-End Convolutional Neural Acoustic Model", Interspeech 2019.
        Verified against ``optax.novograd``, which follows the paper's
        algorithm (``v_1 = ||g_1||**2``, momentum without a ``1 - b1``
        factor, weight decay added to the normalised gradient) and adds
        ``eps_root``.
    """
    sq_norm = jnp.linalg.norm(grad) ** 2
    first = step == 1
    nu = jnp.where(first, sq_norm, (1 - b2) * sq_norm + b2 * nu)
    direction = grad / (jnp.sqrt(nu + eps_root) + eps) + weight_decay * param
    mu = jnp.where(first, direction, b1 * mu + direction)
    return -learning_rate * mu, mu, nu


SPEC = RuleSpec(
    name="novograd",
    reads_whole_leaves=True,
    factory=novograd,
    hyperparams={"learning_rate": 1e-3},
    reference="optax.novograd",
    reference_factory=optax.novograd,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.9, "eps": 1e-8, "eps_root": 1e-8},
        {"learning_rate": 1e-2, "weight_decay": 0.1},
    ),
)
