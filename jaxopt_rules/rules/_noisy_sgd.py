"""Noisy SGD: gradient descent with annealed Gaussian noise added to the gradient."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, random_like, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="noisy_sgd",
    complex_params=True,
    constraints={"eta": ">= 0"},
    positional=("learning_rate", "eta", "gamma", "key"),
    seed_alias="seed",
)
def noisy_sgd(
    grad: Array,
    key: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    eta: Scalar = 0.01,
    gamma: Scalar = 0.55,
) -> Array:
    r"""SGD on the gradient plus Gaussian noise whose variance decays with the step.

    A drop-in for ``optax.noisy_sgd``: same arguments, defaults and random
    numbers. The state carries the PRNG key (``rng_key``, raw ``uint32`` key
    data; ``jr.from_optax`` and ``jr.to_optax`` convert it from and to optax's
    typed key), split at every update exactly as optax splits it, so a run
    seeded with the same ``key`` draws the same noise.

    Update::

        sigma_t = sqrt(eta / t**gamma)             (t = 1 on the first update)
        n_t ~ N(0, 1)                              (per element, fresh each step)
        u_t = -lr_t * (g_t + sigma_t * n_t)

    Neelakantan et al. write the variance as ``eta / (1 + t)**gamma`` with
    ``t`` counted from 0; optax (and this drop-in) counts from 1, the same
    schedule. The noise is drawn in the compute dtype (float32 for bfloat16
    gradients, where optax draws bfloat16 numbers), sharded like the gradient;
    complex gradients get complex noise (variance 1/2 per part), as in optax.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        eta: the noise's variance at the first step.
        gamma: the variance decays as ``t**-gamma``.
        key: the seed of the noise: an integer, a key (``jax.random.key``) or
            raw key data; ``None`` is seed 0 (optax warns and uses 0 too).
        seed: deprecated (as in optax): the seed, when ``key`` is ``None``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.noisy_sgd(0.1, eta=0.0, key=0)  # eta = 0: plain SGD
        >>> updates, _ = tx.update({"w": jnp.array([1.0, 1.0])}, tx.init(params))
        >>> updates["w"]
        Array([-0.1, -0.1], dtype=float32)

    References:
        Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach and Martens,
        "Adding Gradient Noise Improves Learning for Very Deep Networks",
        2015.
        Verified against ``optax.noisy_sgd`` (its noise, draw for draw).
    """
    sigma = jnp.sqrt(eta / step**gamma)
    return -learning_rate * (grad + sigma * random_like(key, grad))


SPEC = RuleSpec(
    name="noisy_sgd",
    factory=noisy_sgd,
    hyperparams={"learning_rate": 1e-3, "eta": 1e-6, "key": 0},
    reference="optax.noisy_sgd",
    reference_factory=optax.noisy_sgd,
    reference_cases=(
        {"learning_rate": 0.05, "key": 0},
        {"learning_rate": 0.05, "eta": 0.1, "gamma": 0.9, "key": 3},
        {"learning_rate": optax.linear_schedule(0.05, 0.01, 50), "key": 7},
    ),
)
