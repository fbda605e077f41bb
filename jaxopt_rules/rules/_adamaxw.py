"""AdaMaxW: AdaMax with decoupled weight decay."""

from collections.abc import Callable
from typing import Any

import optax

from jaxopt_rules._core import Array, Scalar, rule
from jaxopt_rules.rules._adamax import (
    ADAMAX_CONSTRAINTS,
    ADAMAX_SLOTS,
    adamax_direction,
)
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="adamaxw",
    slots=ADAMAX_SLOTS,
    per_leaf={"mask": True},
    complex_params=True,
    constraints={**ADAMAX_CONSTRAINTS, "weight_decay": ">= 0"},
    positional=("learning_rate", "b1", "b2", "eps", "weight_decay", "mask"),
)
def adamaxw(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array]:
    r"""AdaMaxW: AdaMax with weight decay decoupled from the adaptive scaling.

    A drop-in for ``optax.adamaxw`` (same arguments, defaults and numbers),
    plus ``mu_dtype`` and ``nu_dtype``. As in optax, the decay is multiplied
    by the learning rate.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(|g_t| + eps, b2 * u_{t-1})
        u_t' = -lr_t * ((m_t / (1 - b1**t)) / u_t + wd_t * theta_{t-1})

    where the ``wd_t * theta`` term applies only to leaves selected by
    ``mask``. As in ``adamax``, ``eps`` is added to ``|g_t|`` inside the
    maximum (the paper's AdaMax has none).

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the infinity norm, in [0, 1].
        eps: added to ``|g_t|`` so that the norm is never zero.
        weight_decay: decoupled decay rate ``wd``, a number or a schedule.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the gradients returning one: which leaves are decayed. ``None``
            decays every leaf.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of the infinity norm (default: the
            parameter's; float32 for float16 parameters).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = jr.adamaxw(0.1, weight_decay=0.5, mask={"w": True, "b": False})
        >>> grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"], bool((updates["b"] == 0).all())
        (Array([-0.05, -0.05], dtype=float32), True)

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
        ICLR 2019. Verified against ``optax.adamaxw``.
    """
    direction, mu, nu = adamax_direction(grad, mu, nu, step, b1=b1, b2=b2, eps=eps)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="adamaxw",
    factory=adamaxw,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.adamaxw",
    reference_factory=optax.adamaxw,
    reference_cases=(
        {"learning_rate": 1e-2},
        {
            "learning_rate": 1e-2,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-6,
            "weight_decay": 0.1,
        },
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
        {
            "learning_rate": 1e-2,
            "weight_decay": 0.1,
            "mask": lambda tree: {k: k != "scale" for k in tree},
        },
    ),
)
