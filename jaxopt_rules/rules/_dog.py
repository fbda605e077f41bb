"""DoG: SGD whose step size is the distance travelled over the gradients' norms."""

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec
from jaxopt_rules.rules._tree_sums import (
    decayed,
    distance_and_grad_sq_norms,
    tree_sq_norm,
)


_INIT_STEPS = ("distance", "learning_rate", "heuristic")


def _check_init_step(hyper: Mapping[str, Any]) -> None:
    init_step = hyper["init_step"]
    if (
        not isinstance(init_step, tuple | list)
        or len(init_step) != 2
        or init_step[0] not in _INIT_STEPS
    ):
        raise ValueError(
            f"dog: init_step must be a pair (tag, value) with tag one of "
            f"{_INIT_STEPS}, got {init_step!r}"
        )
    if not float(init_step[1]) >= 0:
        raise ValueError(f"dog: init_step's value must be >= 0, got {init_step[1]!r}")


def _initial_distance(params: Any, hyper: Mapping[str, Any]) -> Array:
    """``r_eps``: the distance the first step may travel (optax's three tags)."""
    tag, value = hyper["init_step"]
    if tag == "distance":
        return jnp.asarray(value)
    if tag == "heuristic":
        return value * (1 + jnp.sqrt(tree_sq_norm(params)))
    return jnp.zeros((), jnp.float32)  # "learning_rate": the first step is given


@rule(
    name="dog",
    slots={
        "init_params": Slot(init=lambda p: p),
        "max_dist": Slot(per_tree=True, init=_initial_distance),
        "sum_sq_norm_grads": Slot(per_tree=True),
    },
    global_stats=distance_and_grad_sq_norms,
    static=("init_step",),
    per_leaf={"mask": True},
    constraints={"learning_rate": ">= 0", "eps": ">= 0", "weight_decay": ">= 0"},
    positional=("learning_rate", "init_step", "eps", "weight_decay", "mask"),
    check=_check_init_step,
)
def dog(
    grad: Array,
    init_params: Array,
    max_dist: Array,
    sum_sq_norm_grads: Array,
    param: Array,
    step: Array,
    stats: dict[str, Array],
    *,
    learning_rate: Scalar = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: Scalar = 1e-8,
    weight_decay: Scalar | None = None,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array, Array]:
    r"""DoG: distance over gradients, a step size with no tuning.

    A drop-in for ``optax.contrib.dog`` (same arguments, defaults and
    numbers), plus ``init_params_dtype``, ``max_dist_dtype`` and
    ``sum_sq_norm_grads_dtype``. One step size for the whole tree: the
    largest distance from the initial parameters so far, over the root of
    the summed squared gradient norms. The state holds a copy of the initial
    parameters (kept in full precision by
    :func:`~jaxopt_rules.quantized_state`) and two scalars.

    Update::

        (norms and sums over the whole tree)
        g_t = grad_t + wd * theta_{t-1}                (only where mask, if wd)
        rbar_t = max(rbar_{t-1}, ||theta_{t-1} - theta_0||)
        G_t = G_{t-1} + ||g_t||**2
        eta_t = rbar_t / sqrt(G_t + eps)     (eta_1 = the given value with
                                              init_step=("learning_rate", value))
        u_t = -lr_t * eta_t * g_t

    ``rbar_0`` comes from ``init_step``: ``("distance", r)`` sets it to
    ``r``; ``("heuristic", a)`` to ``a * (1 + ||theta_0||)``;
    ``("learning_rate", eta)`` to 0 with ``eta`` as the first step size.

    Args:
        learning_rate: multiplies DoG's step size; a number or a schedule.
        init_step: ``(tag, value)``, how the first step is sized (above).
            Structural: pass it in ``static_args`` to
            ``optax.inject_hyperparams``.
        eps: added to the sum of squared gradient norms.
        weight_decay: coefficient of ``theta`` added to the gradient
            (``None``: no decay).
        mask: which leaves are decayed (pytree of booleans or a function of the
            params returning one); ``None`` decays every leaf.
        init_params_dtype: storage dtype of the initial parameters (default:
            the parameter's).
        max_dist_dtype: storage dtype of ``rbar`` (default: the lowest
            floating dtype of the parameters, as optax).
        sum_sq_norm_grads_dtype: storage dtype of ``G`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
        ``init`` must see the actual parameters (the heuristic reads them).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import dog
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> tx = dog(init_step=("distance", 1.0), eps=0.0)
        >>> grads = {"w": jnp.array([0.0, 2.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # a first step of length r = 1 along -g
        Array([-0., -1.], dtype=float32)

    References:
        Ivgi, Hinder and Carmon, "DoG is SGD's Best Friend: A Parameter-Free
        Dynamic Step Size Schedule", ICML 2023 (the global, not layer-wise,
        variant; the authors recommend averaging the iterates, which this
        rule does not do). Verified against ``optax.contrib.dog``.
    """
    g = decayed(grad, param, weight_decay, mask)
    max_dist = jnp.maximum(max_dist, jnp.sqrt(stats["sq_dist"]))
    sum_sq_norm_grads = sum_sq_norm_grads + stats["sq_norm"]
    eta = max_dist / jnp.sqrt(sum_sq_norm_grads + eps)
    if init_step[0] == "learning_rate":
        eta = jnp.where(step == 1, init_step[1], eta)
    return -learning_rate * (eta * g), init_params, max_dist, sum_sq_norm_grads


SPEC = RuleSpec(
    name="dog",
    factory=dog,
    # (The default heuristic's first steps are about 1e-6 long: the kit's
    # wrapper and framework checks would see the parameters barely move.)
    hyperparams={"init_step": ("distance", 0.1)},
    reference="optax.contrib.dog",
    reference_factory=optax.contrib.dog,
    reference_cases=(
        # (First: a longer first step, for the framework and wrapper checks.)
        {"init_step": ("distance", 0.1)},
        {},
        {"init_step": ("distance", 1e-2), "eps": 1e-6},
        {"init_step": ("learning_rate", 1e-2), "learning_rate": 0.5},
        {"weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
