"""Tiger: sign descent on a momentum, one slot (Lion with b1 = b2)."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec
from jaxopt_rules.rules._tree_sums import decayed


@rule(
    name="tiger",
    constraints={
        "learning_rate": ">= 0",
        "beta": "[0, 1)",
        "weight_decay": ">= 0",
    },
)
def tiger(
    grad: Array,
    mu: Array,
    param: Array,
    *,
    learning_rate: Scalar = 1e-3,
    beta: Scalar = 0.965,
    weight_decay: Scalar = 0.01,
    decouple: bool = True,
    fixed_decay: bool = False,
) -> tuple[Array, Array]:
    r"""Tiger: the sign of a momentum of the gradients; one slot of state.

    Lion with one decay for both of its averages: the step's direction is the
    momentum itself, so the state is one slot, as for SGD with momentum.

    Update::

        g_t <- g_t + wd * theta_{t-1}              (decouple=False)
        m_t = beta * m_{t-1} + (1 - beta) * g_t
        u_t = -lr_t * (sign(m_t) + wd * theta_{t-1})   (decouple=True;
                                 fixed_decay: wd / lr_t in place of wd)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        beta: decay of the momentum, in [0, 1).
        weight_decay: decay rate (default 0.01).
        decouple: decoupled decay (the default); ``False`` adds
            ``wd * theta`` to the gradient instead.
        fixed_decay: decoupled decay by ``wd``, not ``wd * lr``.
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import tiger
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = tiger(learning_rate=0.1, weight_decay=0.0)
        >>> grads = {"w": jnp.array([2.0, -0.5])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1], dtype=float32)

    References:
        Su, "Tiger: A Tight-fisted Optimizer", 2023
        (https://github.com/bojone/tiger). Verified against
        ``pytorch_optimizer.Tiger`` 4.1.0 (the authors' code adds a
        per-shape learning-rate scaling and gradient accumulation, which
        this rule leaves to ``optax.MultiSteps`` and schedules).
    """
    grad = decayed(grad, param, weight_decay, not decouple)
    mu = (1 - beta) * grad + beta * mu
    step = jnp.sign(mu)
    if not decouple:
        return -learning_rate * step, mu
    decay = weight_decay * param
    if not fixed_decay:
        decay = learning_rate * decay
    return -(learning_rate * step + decay), mu


SPEC = RuleSpec(
    name="tiger",
    factory=tiger,
    hyperparams={"learning_rate": 2e-3, "weight_decay": 0.0},
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.Tiger",
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {"learning_rate": 1e-2, "beta": 0.9, "weight_decay": 0.1},
                {"lr": 1e-2, "beta": 0.9, "weight_decay": 0.1},
            ),
            (
                {"learning_rate": 1e-2, "weight_decay": 0.05, "decouple": False},
                {"lr": 1e-2, "weight_decay": 0.05, "weight_decouple": False},
            ),
            (
                {"learning_rate": 1e-2, "weight_decay": 0.001, "fixed_decay": True},
                {"lr": 1e-2, "weight_decay": 0.001, "fixed_decay": True},
            ),
        ),
    ),
)
