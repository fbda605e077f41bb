"""Schedule-free SGD: no learning-rate schedule, iterate averaging instead."""

import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._schedule_free import (
    averaging_weight,
    schedule_free_step,
    warmup_rates,
)
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec
from jaxopt_rules.rules._tree_sums import decayed


@rule(
    name="schedule_free_sgd",
    slots={
        "z": Slot(init=lambda p: p, dtype_arg="state_dtype"),
        "weight_sum": Slot(per_tree=True),
        "max_lr": Slot(per_tree=True),
    },
    static=("warmup_steps", "warmup_from_zero"),
    constraints={
        "learning_rate": ">= 0",
        "warmup_steps": ">= 0",
        "b1": "(0, 1)",
        "weight_decay": ">= 0",
        "r": ">= 0",
    },
    positional=(
        "learning_rate",
        "warmup_steps",
        "b1",
        "weight_decay",
        "weight_lr_power",
        "state_dtype",
    ),
)
def schedule_free_sgd(
    grad: Array,
    z: Array,
    weight_sum: Array,
    max_lr: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 1.0,
    warmup_steps: int | None = None,
    b1: Scalar = 0.9,
    weight_decay: Scalar | None = None,
    weight_lr_power: Scalar = 2.0,
    r: Scalar = 0.0,
    warmup_from_zero: bool = True,
) -> tuple[Array, Array, Array, Array]:
    r"""Schedule-free SGD: SGD steps on ``z``, parameters near its average.

    A drop-in for ``optax.contrib.schedule_free_sgd`` (same arguments,
    defaults and numbers; ``state_dtype`` stores ``z``). The parameters the
    update moves are ``y``, where gradients are taken; evaluate the model at
    ``x = (y - (1 - b1) * z) / b1`` (the state has no ``b1`` field, so
    ``optax.contrib.schedule_free_eval_params`` needs optax's state: convert
    with :func:`~jaxopt_rules.to_optax`, or compute ``x`` directly). The state
    holds ``z``, a copy of the parameters at first (kept in
    full precision by :func:`~jaxopt_rules.quantized_state`), and two scalars.

    Update::

        lr_t: learning_rate, warmed up linearly from 0 over warmup_steps
        z_t = z_{t-1} - lr_{t-1} * (g_t + wd * y_{t-1})       (wd if given)
        L_t = max(L_{t-1}, lr_t);  w_t = t**r * L_t**weight_lr_power
        c_t = w_t / (w_1 + ... + w_t)
        x_{t-1} = (y_{t-1} - (1 - b1) * z_{t-1}) / b1
        x_t = (1 - c_t) * x_{t-1} + c_t * z_t
        u_t = b1 * x_t + (1 - b1) * z_t - y_{t-1}
            = (1 - b1) * (z_t - z_{t-1}) + b1 * c_t * (z_t - x_{t-1})

    (computed in the second form: optax subtracts y_{t-1} from the new y,
    which leaves an error of y's last bit in the much smaller change.)

    (``lr`` indexed by the 0-based step count: the step uses the count's rate,
    the weight the next one's, as optax does; ``warmup_from_zero=False`` gives
    both the next one's, ``lr * min(t, warmup_steps) / warmup_steps`` at the
    1-based step ``t``, as the authors' ``schedulefree`` does.) A schedule passed as
    ``learning_rate`` is evaluated at the step count for both; optax evaluates
    the weight's at the count plus one.

    Args:
        learning_rate: step size of the SGD sequence ``z``; a number (or a
            schedule, see above).
        warmup_steps: linear warm-up from 0 over this many steps (``None``:
            none). Structural: pass it in ``static_args`` to
            ``optax.inject_hyperparams``.
        b1: interpolation between ``x`` and ``z`` for ``y``, in (0, 1).
        weight_decay: coefficient of ``y`` added to the gradient (``None``:
            no decay).
        weight_lr_power: the averaging weights are ``max_lr**power``.
        r: polynomial weighting: the weights are multiplied by ``t**r``
            (the authors' ``r``; 0, the default, is optax's weighting).
        warmup_from_zero: ``True`` (optax): the first step's rate is 0;
            ``False``: ``learning_rate / warmup_steps``, as the authors'
            ``schedulefree``. Structural, like ``warmup_steps``.
        state_dtype: storage dtype of ``z`` (default: the parameter's).
        weight_sum_dtype: storage dtype of the sum of weights (default: the
            lowest floating dtype of the parameters, as optax).
        max_lr_dtype: storage dtype of the largest learning rate (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import schedule_free_sgd
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = schedule_free_sgd(learning_rate=0.5)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # c_1 = 1: y moves to z = y - 0.5 g
        Array([-0.5,  0.5], dtype=float32)

    References:
        Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, "The Road Less
        Scheduled", NeurIPS 2024 (Algorithm 1 with the warm-up weighting
        ``c_t = lr_t**2 / sum lr_i**2`` of its Section 4).
        Verified against ``schedulefree`` 1.4.1 (the authors' code;
        ``warmup_from_zero=False``) and ``optax.contrib.schedule_free_sgd``.
    """
    lr_step, weight_rate = warmup_rates(
        learning_rate, warmup_steps, step, warmup_from_zero
    )
    ck, max_lr, weight_sum = averaging_weight(
        weight_rate, step, max_lr, weight_sum, weight_lr_power, r
    )
    step_z = -lr_step * decayed(grad, param, weight_decay, True)
    update = schedule_free_step(param, z, step_z, ck, b1)
    return update, z + step_z, weight_sum, max_lr


SPEC = RuleSpec(
    name="schedule_free_sgd",
    factory=schedule_free_sgd,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.contrib.schedule_free_sgd",
    reference_factory=optax.contrib.schedule_free_sgd,
    reference_cases=(
        {"learning_rate": 0.1},
        {"learning_rate": 0.1, "warmup_steps": 10, "b1": 0.8},
        {"learning_rate": 0.1, "weight_decay": 0.1, "weight_lr_power": 1.0},
    ),
    authors=AuthorsReference(
        requirement="schedulefree==1.4.1",
        optimizer="schedulefree.SGDScheduleFree",
        cases=(
            ({"learning_rate": 0.1}, {"lr": 0.1}),
            (
                {
                    "learning_rate": 0.1,
                    "warmup_steps": 10,
                    "warmup_from_zero": False,
                    "b1": 0.8,
                    "r": 0.5,
                },
                {"lr": 0.1, "warmup_steps": 10, "momentum": 0.8, "r": 0.5},
            ),
            (
                {"learning_rate": 0.1, "weight_decay": 0.1, "weight_lr_power": 1.0},
                {"lr": 0.1, "weight_decay": 0.1, "weight_lr_power": 1.0},
            ),
        ),
    ),
)
