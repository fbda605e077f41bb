"""Write your own optimizer in a few lines, check it, and train with it.

The walkthrough:

1. write the update for ONE leaf as a plain function: the gradient first, then
   state slots (if any), then keyword-only hyperparameters;
2. decorate it with ``jaxopt_rules.rule``: you get a factory of optax
   transforms, with state, schedules, dtypes, masking and
   ``inject_hyperparams`` support handled by the core;
3. check it with the conformance kit, ``jaxopt_rules.testing.check_rule``;
4. use it like any optax optimizer.

Run: ``python examples/custom_rule.py``.
"""

import jax
import jax.numpy as jnp
import optax

import jaxopt_rules as jr
from jaxopt_rules import testing


# 1-2. A "scaled SGD": the plain gradient step, multiplied by a factor.
@jr.rule(constraints={"learning_rate": ">= 0", "factor": "> 0"})
def scaled_sgd(grad: jr.Array, *, learning_rate: jr.Scalar, factor: jr.Scalar = 1.0):
    """Scaled SGD: ``u = -learning_rate * factor * g``."""
    return -learning_rate * factor * grad


# A rule with state: one slot, ``velocity``, named by the function's second
# positional parameter. The rule returns the update, then the new slot.
@jr.rule(constraints={"learning_rate": ">= 0", "beta": "[0, 1)"})
def scaled_momentum(
    grad: jr.Array,
    velocity: jr.Array,
    *,
    learning_rate: jr.Scalar,
    factor: jr.Scalar = 1.0,
    beta: jr.Scalar = 0.9,
):
    """Scaled heavy-ball SGD: ``v = beta * v + g``, ``u = -lr * factor * v``."""
    velocity = beta * velocity + grad
    return -learning_rate * factor * velocity, velocity


# Hyperparameters the conformance kit runs the rules with; they must reach the
# minimum of a parabola and of Rosenbrock's valley in 10,000 steps.
SCALED_SGD_TEST_HYPERPARAMS = {"learning_rate": 1e-3, "factor": 1.5}
SCALED_MOMENTUM_TEST_HYPERPARAMS = {"learning_rate": 1e-4, "factor": 2.0, "beta": 0.9}


def main(steps: int = 200) -> float:
    """Checks both rules, then fits a small least-squares problem; returns the loss."""
    # 3. The conformance kit: one call runs every check (21 of them: jit,
    # vmap, scan, chain/masked/partition/MultiSteps/apply_if_finite,
    # inject_hyperparams, schedules, sharding when devices allow, ...).
    ran = testing.check_rule(scaled_sgd, SCALED_SGD_TEST_HYPERPARAMS)
    print(f"scaled_sgd passed {len(ran)} conformance checks: {', '.join(ran)}")
    ran = testing.check_rule(scaled_momentum, SCALED_MOMENTUM_TEST_HYPERPARAMS)
    print(f"scaled_momentum passed {len(ran)} conformance checks")

    # What the core built: an optax transform with a named NamedTuple state.
    tx = scaled_momentum(learning_rate=0.05, factor=2.0)
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    print("state:", jax.tree.map(jnp.shape, tx.init(params)))

    # 4. Train: least squares y = x @ w_true + 0.5, with a decaying schedule and
    # gradient clipping chained in front, as with any optax optimizer.
    key_x, key_noise = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (256, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.5
    y = y + 0.01 * jax.random.normal(key_noise, y.shape)

    def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    schedule = optax.cosine_decay_schedule(0.05, decay_steps=steps)
    tx = optax.chain(
        optax.clip_by_global_norm(10.0),
        scaled_momentum(learning_rate=schedule, factor=2.0, beta=0.8),
    )
    state = tx.init(params)

    @jax.jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    loss = jnp.inf
    for step in range(steps):
        params, state, loss = train_step(params, state)
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}  loss {float(loss):.5f}")
    final = float(loss_fn(params))
    print(f"final loss {final:.5f}; w = {params['w']}, b = {float(params['b']):.3f}")
    return final


if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", 8)  # lets the sharding check run
    main()
