"""The averaging step shared by the schedule-free rules, and their eval point."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, describe_mismatch, is_hole


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


def warmup_rates(
    learning_rate: Scalar,
    warmup_steps: int | None,
    step: Array,
    warmup_from_zero: bool,
) -> tuple[Array, Array]:
    """This step's rate, and the rate its averaging weight is computed from.

    optax (``warmup_from_zero=True``): the step (1-based ``step``) uses the
    warmed-up rate of the count ``step - 1`` (0 at the first step), the
    weight the next one's. The authors' ``schedulefree`` (``False``): both
    use ``learning_rate * min(step, warmup_steps) / warmup_steps``.
    """
    weight_rate = (
        jnp.asarray(learning_rate)
        if warmup_steps is None
        else warmed_up(learning_rate, warmup_steps, step)
    )
    if not warmup_from_zero:
        return weight_rate, weight_rate
    return warmed_up(learning_rate, warmup_steps, step - 1), weight_rate


def averaging_weight(
    rate: Array,
    step: Array,
    max_lr: Array,
    weight_sum: Array,
    weight_lr_power: Scalar,
    r: Scalar,
) -> tuple[Array, Array, Array]:
    """The averaging weight ``c_t``, the new largest rate and the new sum.

    ``w_t = step**r * max_lr**power`` (``r = 0``: optax's weights).
    ``c_t = w_t / sum w`` is NaN when the weight or the sum is NaN, and 0 for
    ``0 / 0`` (no rate yet: during a warm-up from 0, or RAdam's first
    steps), as optax and the authors' code compute it.

    Returns:
        ``(c_t, max_lr, weight_sum)``.
    """
    max_lr = jnp.maximum(max_lr, rate)
    weight = max_lr**weight_lr_power
    if not (isinstance(r, int | float) and r == 0):
        weight = step.astype(weight.dtype) ** r * weight
    total = weight_sum + weight
    ck = jnp.where(
        jnp.isnan(weight) | jnp.isnan(total),
        jnp.nan,
        jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
    )
    return ck, max_lr, total


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


def _is_schedule_free_state(node: Any) -> bool:
    return hasattr(node, "_fields") and "z" in node._fields


def _find(state: Any, b1: Any) -> list[tuple[Any, Any]]:
    """Every schedule-free state in ``state`` with the ``b1`` known above it."""
    if _is_schedule_free_state(state):
        return [(state, getattr(state, "b1", b1))]
    hyperparams = getattr(state, "hyperparams", None)
    if isinstance(hyperparams, dict) and "b1" in hyperparams:
        b1 = hyperparams["b1"]  # optax.inject_hyperparams
    children = (  # (NamedTuples are tuples)
        state
        if isinstance(state, tuple | list)
        else state.values()
        if isinstance(state, dict)
        else ()
    )
    return [found for child in children for found in _find(child, b1)]


def schedule_free_eval_params(
    state: optax.OptState, params: optax.Params, b1: Scalar | None = None
) -> optax.Params:
    r"""The parameters to evaluate a schedule-free run at: the average ``x``.

    Training moves ``y = b1 * x + (1 - b1) * z``, where gradients are taken;
    the model is evaluated at ``x``::

        x = (y - (1 - b1) * z) / b1

    (the authors' ``optimizer.eval()``, ``optax.contrib.schedule_free_eval_params``).

    Args:
        state: the optimizer's state: of :func:`schedule_free_adamw` or
            :func:`schedule_free_sgd` (also inside ``optax.chain``,
            ``optax.inject_hyperparams`` and other wrappers), or of
            ``optax.contrib.schedule_free``.
        params: the parameters ``y`` the run has reached.
        b1: the interpolation ``b1`` the rule runs with. Needed unless the
            state holds it (optax's state, or ``optax.inject_hyperparams``);
            when both give it, the argument wins.

    Returns:
        ``x``, shaped and typed like ``params`` (leaves the rule does not
        update, such as integers or a mask's holes, as they are).

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.schedule_free_sgd(learning_rate=0.5, b1=0.5)
        >>> state = tx.init(params)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, state = tx.update(grads, state, params)
        >>> params = {"w": params["w"] + updates["w"]}
        >>> jr.schedule_free_eval_params(state, params, b1=0.5)["w"]
        Array([ 0.5, -1.5], dtype=float32)

    References:
        Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
    """
    found = _find(state, None)
    if len(found) != 1:
        raise ValueError(
            "schedule_free_eval_params needs the state of exactly one "
            f"schedule-free rule; found {len(found)} states with a `z` field"
        )
    sf_state, held_b1 = found[0]
    b1 = held_b1 if b1 is None else b1
    if b1 is None:
        raise ValueError(
            "schedule_free_eval_params: pass b1=, the interpolation the rule "
            "runs with (this state does not hold it)"
        )

    if jax.tree.structure(params, is_leaf=is_hole) != jax.tree.structure(
        sf_state.z, is_leaf=is_hole
    ):
        raise ValueError(
            "schedule_free_eval_params: params and the state's z differ in "
            f"structure: {describe_mismatch(sf_state.z, params)}"
        )

    def average(y: Any, z: Any) -> Any:
        if is_hole(z) or is_hole(y):
            return y
        y_arr = jnp.asarray(y)
        if not jnp.issubdtype(y_arr.dtype, jnp.inexact):
            return y
        z_arr = jnp.asarray(z).astype(y_arr.dtype)
        return ((y_arr - (1.0 - b1) * z_arr) / b1).astype(y_arr.dtype)

    return jax.tree.map(average, params, sf_state.z, is_leaf=is_hole)
