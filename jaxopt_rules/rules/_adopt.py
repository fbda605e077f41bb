"""ADOPT: Adam with the current gradient normalised by the previous second moment."""

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


# optax's default clipping function (``count ** 0.25``), the object itself, so
# the factory's signature (defaults compared with ``==``) is optax's.
_QUARTER_ROOT: Callable[[jax.Array], jax.Array] = (
    inspect.signature(optax.contrib.adopt).parameters["clip_value_fn"].default
)


def _quarter_root_of_step(count: Any) -> Any:
    """The authors' clip: the 1-based step's quarter root (optax: the count's)."""
    return (count + 1) ** 0.25


@rule(
    name="adopt",
    slots={"nu": Slot(square=True)},
    static=("clip_value_fn",),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
    },
    positional=("learning_rate", "b1", "b2", "eps", "mu_dtype"),
)
def adopt(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[Any], Any] = _QUARTER_ROOT,
) -> tuple[Array, Array, Array]:
    r"""ADOPT: Adam whose step normalises the gradient by the *previous* second moment.

    A drop-in for ``optax.contrib.adopt`` (same arguments, defaults and
    numbers), plus ``nu_dtype`` for the second moment's storage. Normalising
    ``g_t`` by ``v_{t-1}`` (which does not contain ``g_t``) and taking the
    momentum after the normalisation is what lets ADOPT converge for any
    ``b2``. The first update only initialises ``v`` and moves nothing.

    Update::

        t = 1:   v_1 = g_1**2,  m_1 = 0,  u_1 = 0
        t > 1:   c_t = clip_value_fn(t - 1)
                 n_t = clip(g_t / max(sqrt(v_{t-1}), eps), -c_t, c_t)
                                                 (no clip without use_clipping)
                 m_t = b1 * m_{t-1} + (1 - b1) * n_t
                 v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
                 u_t = -lr_t * m_t     (nesterov: -lr_t * (b1 * m_t + (1 - b1) * n_t))

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum of normalised gradients, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: lower bound of ``sqrt(v)`` in the normalisation.
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        nesterov: apply the momentum once more to the current normalised
            gradient (Nesterov's look-ahead).
        use_clipping: clip the normalised gradient to ``[-c_t, c_t]``.
        clip_value_fn: the clipping bound ``c`` as a function of the number of
            updates taken before this one (an array); default ``count ** 0.25``.
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.adopt(1e-1)
        >>> state = tx.init(params)
        >>> grads = {"w": jnp.array([2.0, -4.0])}
        >>> updates, state = tx.update(grads, state)  # the first step only sets v
        >>> bool((updates["w"] == 0).all()), state.nu["w"]
        (True, Array([ 4., 16.], dtype=float32))
        >>> updates, state = tx.update(grads, state)
        >>> updates["w"]
        Array([-0.01,  0.01], dtype=float32)

    References:
        Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2
        with the Optimal Rate", NeurIPS 2024. The paper initialises ``v`` from
        a gradient before the loop; optax (and this rule) spends the first
        update on it, with a zero step. Nesterov momentum is optax's addition.
        The authors' code (and ``pytorch_optimizer.ADOPT``) clips at the
        1-based step's quarter root, optax at the count's (one less):
        ``clip_value_fn=lambda count: (count + 1) ** 0.25`` gives their
        numbers. Verified against ``optax.contrib.adopt`` and
        ``pytorch_optimizer.ADOPT`` 4.1.0.
    """
    first = step <= 1
    b1_ = jnp.where(first, 1.0, b1)
    b2_ = jnp.where(first, 0.0, b2)
    normalised = grad / jnp.maximum(jnp.sqrt(nu), eps)
    if use_clipping:
        bound = clip_value_fn(step - 1)
        normalised = jnp.clip(normalised, -bound, bound)
    nu = (1 - b2_) * grad**2 + b2_ * nu
    mu = (1 - b1_) * normalised + b1_ * mu
    direction = (1 - b1_) * normalised + b1_ * mu if nesterov else mu
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="adopt",
    factory=adopt,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.contrib.adopt",
    reference_factory=optax.contrib.adopt,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-4, "nesterov": True},
        {"learning_rate": 1e-2, "use_clipping": False},
        {"learning_rate": 1e-2, "clip_value_fn": lambda count: 0.5 + 0.1 * count},
    ),
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.ADOPT",
        cases=(
            (
                {"learning_rate": 1e-2, "clip_value_fn": _quarter_root_of_step},
                {"lr": 1e-2},
            ),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "eps": 1e-4,
                    "use_clipping": False,
                },
                {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-4, "clip_lambda": None},
            ),
        ),
    ),
)
