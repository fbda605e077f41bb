"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum."""

import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="sgd",
    slots={"trace": Slot(dtype_arg="accumulator_dtype", when="momentum")},
    constraints={"learning_rate": ">= 0", "momentum": ">= 0"},
    complex_params=True,
    positional=("learning_rate", "momentum", "nesterov", "accumulator_dtype"),
)
def sgd(
    grad: Array,
    trace: Array | None,
    *,
    learning_rate: Scalar,
    momentum: Scalar | None = None,
    nesterov: bool = False,
) -> tuple[Array, Array | None]:
    r"""Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    A drop-in for ``optax.sgd`` (same arguments, defaults and numbers).

    Update::

        without momentum:  u_t = -lr_t * g_t
        with momentum:     m_t = g_t + momentum * m_{t-1},   m_0 = 0
                           u_t = -lr_t * m_t                          (heavy ball)
                           u_t = -lr_t * (g_t + momentum * m_t)       (nesterov)

    Args:
        learning_rate: step size ``lr``, a number or a schedule of the step count.
        momentum: decay of the momentum trace; ``None`` keeps no state.
        nesterov: use Nesterov's look-ahead form of momentum.
        accumulator_dtype: storage dtype of the momentum trace (default: the
            parameter's dtype). Arithmetic is done in at least float32.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = [jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])]
        >>> grads = [jnp.array([0.1, 0.1]), jnp.array([0.2, 0.2])]
        >>> tx = jr.sgd(learning_rate=0.05, momentum=0.9)
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> optax.apply_updates(params, updates)
        [Array([0.995, 1.995], dtype=float32), Array([2.99, 3.99], dtype=float32)]

    References:
        Polyak, "Some methods of speeding up the convergence of iteration
        methods", USSR Computational Mathematics and Mathematical Physics, 1964.
        Sutskever et al., "On the importance of initialization and momentum in
        deep learning", ICML 2013. Verified against ``optax.sgd``.
    """
    if momentum is None or trace is None:
        return -learning_rate * grad, None
    trace = grad + momentum * trace
    direction = grad + momentum * trace if nesterov else trace
    return -learning_rate * direction, trace


SPEC = RuleSpec(
    name="sgd",
    factory=sgd,
    hyperparams={"learning_rate": 1e-3, "momentum": 0.9},
    reference="optax.sgd",
    reference_factory=optax.sgd,
    reference_cases=(
        {"learning_rate": 0.05},
        {"learning_rate": 0.05, "momentum": 0.9},
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        {"learning_rate": 0.05, "momentum": 0.0},
    ),
)
