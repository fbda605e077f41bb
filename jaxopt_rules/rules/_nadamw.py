"""NAdamW: NAdam with decoupled weight decay."""

from collections.abc import Callable
from typing import Any

import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_direction, adam_moments
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="nadamw",
    slots={"nu": Slot(square=True)},
    per_leaf={"mask": True},
    complex_params=True,
    constraints={**ADAM_CONSTRAINTS, "weight_decay": ">= 0"},
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "eps",
        "eps_root",
        "mu_dtype",
        "weight_decay",
        "mask",
    ),
)
def nadamw(
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
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    nesterov: bool = True,
) -> tuple[Array, Array, Array]:
    r"""NAdamW: NAdam with weight decay decoupled from the adaptive scaling.

    A drop-in for ``optax.nadamw`` (same arguments, defaults and numbers),
    plus ``nu_dtype``. As in optax, where ``nadamw`` is ``adamw`` with
    ``nesterov=True``, ``nesterov=False`` gives AdamW; the decay is
    multiplied by the learning rate.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|**2
        m_hat = b1 * m_t / (1 - b1**(t+1)) + (1 - b1) * g_t / (1 - b1**t)
                                          (nesterov=False: m_t / (1 - b1**t))
        v_hat = v_t / (1 - b2**t)
        u_t = -lr_t * (m_hat / (sqrt(v_hat + eps_root) + eps) + wd_t * theta_{t-1})

    where the ``wd_t * theta`` term applies only to leaves selected by
    ``mask``. Dozat's NAdam schedules the momentum (a warm-up of ``b1``);
    optax (and this rule) keeps ``b1`` constant.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        weight_decay: decoupled decay rate ``wd``, a number or a schedule.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the gradients returning one: which leaves are decayed. ``None``
            decays every leaf.
        nesterov: use the look-ahead first moment (``False``: AdamW's).
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = jr.nadamw(0.1, weight_decay=0.5, mask={"w": True, "b": False})
        >>> grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"], bool((updates["b"] == 0).all())
        (Array([-0.05, -0.05], dtype=float32), True)

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
        ICLR 2019. Verified against ``optax.nadamw``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov
    )
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="nadamw",
    factory=nadamw,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.nadamw",
    reference_factory=optax.nadamw,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "eps_root": 1e-8},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
        {
            "learning_rate": 1e-2,
            "weight_decay": 0.1,
            "mask": lambda tree: {k: k != "scale" for k in tree},
        },
        {"learning_rate": 1e-2, "weight_decay": 0.1, "nesterov": False},
    ),
)
