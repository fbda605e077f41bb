"""Optimistic Adam (optax's first interface): the optimism is a step size."""

import functools
import warnings
from typing import Any

import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_direction, adam_moments
from jaxopt_rules.rules._optimistic_gradient_descent import optimistic_direction
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="optimistic_adam",
    slots={"nu": Slot(square=True), "previous_gradient": Slot()},
    constraints=ADAM_CONSTRAINTS,
    complex_params=True,
    positional=(
        "learning_rate",
        "optimism",
        "b1",
        "b2",
        "eps",
        "eps_root",
        "mu_dtype",
    ),
)
def optimistic_adam(
    grad: Array,
    mu: Array,
    nu: Array,
    previous_gradient: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    optimism: Scalar | None = None,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    nesterov: bool = True,
) -> tuple[Array, Array, Array, Array]:
    r"""Optimistic Adam with the optimism given as a step size.

    A drop-in for ``optax.optimistic_adam`` (same arguments, defaults and
    numbers), plus ``nu_dtype`` and ``previous_gradient_dtype``. optax
    deprecates this interface in favour of ``optimistic_adam_v2``
    (:func:`~jaxopt_rules.optimistic_adam_v2`), where ``alpha`` and ``beta``
    are relative to the learning rate; this drop-in does not warn. Unlike
    optax's, it accepts schedules for ``learning_rate`` and ``optimism``.

    Update::

        r_t as in optimistic_adam_v2
        o   = optimism, or learning_rate when None
        u_t = -((lr_t + o) * r_t - o * r_{t-1}),    r_0 = r_1

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        optimism: weight of the direction's change; ``None`` uses the
            learning rate (the paper's choice).
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added inside the square root.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nesterov: use the Nesterov (NAdam) form of the first moment.
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        previous_gradient_dtype: storage dtype of ``r_{t-1}`` (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``. Its state keeps ``mu``,
        ``nu`` and ``previous_gradient`` (``r_{t-1}``); optax's also keeps an
        ``is_initial_step`` flag, which here is ``count == 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.optimistic_adam(0.5, 0.25, eps=0.0, nesterov=False)
        >>> state = tx.init({"w": jnp.zeros(1)})
        >>> updates, state = tx.update({"w": jnp.array([2.0])}, state)
        >>> updates["w"]  # first step: lr * r_1, and r_1 = 1
        Array([-0.5], dtype=float32)

    References:
        Daskalakis, Ilyas, Syrgkanis and Zeng, "Training GANs with Optimism",
        ICLR 2018. Verified against ``optax.optimistic_adam``. The paper's
        Optimistic Adam steps by ``2 lr r_t - lr r_{t-1}`` (the default
        ``optimism``) with the plain Adam ratio; optax uses NAdam's first
        moment unless ``nesterov=False``, and takes ``r_1`` for the missing
        ``r_0``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov
    )
    o = learning_rate if optimism is None else optimism
    optimistic = optimistic_direction(
        direction, previous_gradient, step, alpha=learning_rate, beta=o
    )
    return -optimistic, mu, nu, direction


@functools.wraps(optax.optimistic_adam)
def _optimistic_adam_reference(
    *args: Any, **kwargs: Any
) -> optax.GradientTransformation:
    """``optax.optimistic_adam`` (same signature), without its deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.optimistic_adam(*args, **kwargs)


SPEC = RuleSpec(
    name="optimistic_adam",
    factory=optimistic_adam,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.optimistic_adam",
    reference_factory=_optimistic_adam_reference,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "optimism": 0.02, "nesterov": False},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8},
    ),
)
