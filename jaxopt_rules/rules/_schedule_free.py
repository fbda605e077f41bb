"""The averaging step shared by the schedule-free rules (no rule of its own)."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar


def warmed_up(learning_rate: Scalar, warmup_steps: int | None, count: Array) -> Array:
    """``learning_rate`` after a linear warm-up from 0 over ``warmup_steps``.

    optax's ``warmup_constant_schedule(0, learning_rate, warmup_steps)`` at the
    (0-based) ``count``.
    """
    if warmup_steps is None:
        return jnp.asarray(learning_rate)
    if warmup_steps <= 0:
        return jnp.asarray(learning_rate) * jnp.ones_like(count)
    # (optax's linear schedule: (start - end) * (1 - t / T) + end, start 0.)
    left = 1 - jnp.clip(count, 0, warmup_steps) / warmup_steps
    return -learning_rate * left + learning_rate


def averaging(
    learning_rate: Scalar,
    warmup_steps: int | None,
    step: Array,
    max_lr: Array,
    weight_sum: Array,
    weight_lr_power: Scalar,
) -> tuple[Array, Array, Array, Array]:
    """This step's rate and averaging weight ``c_t``; the new largest rate and sum.

    The step uses the rate of the (0-based) count ``step - 1``; the weight
    ``w_t = max_lr**power`` the next one's, as optax does. ``c_t = w_t / sum
    w`` is NaN when the weight or the sum is NaN, and 0 for ``0 / 0`` (no
    rate yet, during a warm-up from 0), as optax computes it.

    Returns:
        ``(lr, c_t, max_lr, weight_sum)``.
    """
    lr = warmed_up(learning_rate, warmup_steps, step - 1)
    next_lr = (
        lr if warmup_steps is None else warmed_up(learning_rate, warmup_steps, step)
    )
    max_lr = jnp.maximum(max_lr, next_lr)
    weight = max_lr**weight_lr_power
    total = weight_sum + weight
    ck = jnp.where(
        jnp.isnan(weight) | jnp.isnan(total),
        jnp.nan,
        jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
    )
    return lr, ck, max_lr, total


def schedule_free_step(
    param: Array, z: Array, step: Array, ck: Array, b1: Scalar
) -> Array:
    """The change of ``y`` when ``z`` takes ``step`` and ``x`` averages it in.

    ``y = b1 * x + (1 - b1) * z`` are the parameters, so ``x`` is recovered
    from them and the old ``z``. optax forms the new ``y`` and subtracts the
    old one, which leaves an error of the order of ``y``'s last bit in a
    change much smaller than ``y``; the same change is computed here from
    its two parts, ``(1 - b1) * step + b1 * c * (z_new - x_old)``.
    """
    prev_x = (param - (1.0 - b1) * z) / b1
    new_z = z + step
    return (1.0 - b1) * step + b1 * ck * (new_z - prev_x)
