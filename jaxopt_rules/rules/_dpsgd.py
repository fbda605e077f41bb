"""DP-SGD: per-example clipping, Gaussian noise, then SGD with optional momentum."""

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from jaxopt_rules._core import (
    Array,
    Scalar,
    Slot,
    composite,
    random_like,
    rule,
    split_with_leaves,
)
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="dpsgd",
    slots={"trace": Slot(dtype_arg="accumulator_dtype", when="momentum")},
    extra_args=("batch_size",),
    constraints={
        "learning_rate": ">= 0",
        "l2_norm_clip": "> 0",
        "noise_multiplier": ">= 0",
        "momentum": ">= 0",
    },
    seed_arg="seed",
    seed_default=inspect.Parameter.empty,
    key_split=split_with_leaves,
)
def dpsgd_step(
    grad: Array,
    trace: Array | None,
    key: Array,
    batch_size: Array,
    *,
    learning_rate: Scalar,
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    momentum: Scalar | None = None,
    nesterov: bool = False,
) -> tuple[Array, Array | None]:
    """DP-SGD's per-leaf arithmetic, given the leaf's sum of clipped examples.

    The build function :func:`dpsgd` clips each example by its norm over the
    whole tree and sums them (``grad`` here), and passes the batch size.
    """
    noise = random_like(key, grad)
    g = (grad + (l2_norm_clip * noise_multiplier) * noise) / batch_size
    if momentum is None or trace is None:
        return -learning_rate * g, None
    trace = g + momentum * trace
    direction = g + momentum * trace if nesterov else trace
    return -learning_rate * direction, trace


def clipped_sum(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Each example scaled to global norm at most ``l2_norm_clip``, then summed.

    ``grads`` holds per-example gradients (a leading batch axis on every
    leaf). An example's norm is taken over all its leaves; a zero example
    keeps its multiplier 1 (optax's ``nan_to_num``).

    Returns:
        The tree of sums (batch axis gone) and the batch size.
    """
    leaves, treedef = jax.tree.flatten(grads)
    floating = [jnp.issubdtype(jnp.result_type(g), jnp.inexact) for g in leaves]
    sq = sum(
        jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))
        for g, f in zip(leaves, floating, strict=True)
        if f
    )
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / jnp.sqrt(sq), 1.0), nan=1.0)
    # Integer leaves (and float0 gradients) are not summed: the rule leaves
    # them untouched whatever it gets, so the first example stands in.
    sums = [
        jnp.tensordot(multipliers.astype(g.dtype), g, axes=1) if f else _first(g)
        for g, f in zip(leaves, floating, strict=True)
    ]
    return jax.tree.unflatten(treedef, sums), jnp.asarray(leaves[0].shape[0])


def _first(g: Any) -> Any:
    """The first example of an inert leaf (``float0`` stays a ``float0`` array)."""
    if jnp.result_type(g) == jax.dtypes.float0:
        return np.zeros(np.shape(g)[1:], jax.dtypes.float0)
    return g[0]


def _check_batch_axis(grads: Any, params: Any) -> None:
    """A clear error unless every leaf of ``grads`` is a batch of its parameter."""
    found = jax.tree.leaves_with_path(grads)
    if not found:
        return
    first = jnp.shape(found[0][1])
    batch = first[0] if first else None
    shapes = (
        [jnp.shape(p) for p in jax.tree.leaves(params)]
        if params is not None
        and jax.tree.structure(params) == jax.tree.structure(grads)
        else [None] * len(found)
    )
    for (path, g), want in zip(found, shapes, strict=True):
        shape = jnp.shape(g)
        if not shape or shape[0] != batch or (want is not None and shape[1:] != want):
            raise ValueError(
                "dpsgd: update takes per-example gradients, a leading batch axis "
                "of the same length on every leaf (jax.vmap(jax.grad(loss), "
                f"in_axes=(None, 0))); the leaf {jax.tree_util.keystr(path)} has "
                f"shape {shape}"
                + (f" for a parameter of shape {want}" if want is not None else "")
            )


@composite(dpsgd_step, per_example=True)
def dpsgd(
    learning_rate: optax.ScalarOrSchedule,
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    seed: int | jax.Array,
    momentum: Scalar | None = None,
    nesterov: bool = False,
    *,
    accumulator_dtype: Any | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""DP-SGD: clip each example's gradient, add Gaussian noise, average, step.

    A drop-in for ``optax.contrib.dpsgd`` (same arguments, defaults, random
    numbers and numbers), plus ``accumulator_dtype`` and stochastic rounding.
    ``update`` takes **per-example** gradients: every leaf has a leading
    batch axis of the same length ``B`` (``jax.vmap(jax.grad(loss),
    in_axes=(None, 0))(params, batch)``); the updates have the parameters'
    shapes.

    Update::

        c_i   = min(1, C / ||g_i||)        (||.|| over all leaves of example i)
        n_t   ~ N(0, 1)                    (per element, fresh each step)
        g_t   = (sum_i c_i g_i + C sigma n_t) / B
        m_t   = g_t + momentum m_{t-1}                          (with momentum)
        u_t   = -lr_t g_t,  -lr_t m_t,  or  -lr_t (g_t + momentum m_t)  (nesterov)

    with ``C = l2_norm_clip`` and ``sigma = noise_multiplier``. The key is
    split as optax splits it (``next, *per_leaf = split(key, n_leaves + 1)``),
    so the same seed draws the same noise; an example of zero norm keeps
    multiplier 1, as in optax. optax seeds with ``jax.random.key(seed)`` (and
    warns that ``seed`` is deprecated inside its own ``dpsgd``); the state
    here keeps the raw key data (``rng_key``).

    Why this is not one rule function: the clipping multiplier of an example
    is its norm over every leaf of the tree, and the gradients it reads have a
    batch axis the parameters do not. The sum of clipped examples is computed
    here; the per-leaf arithmetic (noise, momentum, step) is one rule
    (``dpsgd_step``, which handles the key, dtypes, schedules and the slot).

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        l2_norm_clip: the bound ``C`` on each example's gradient norm (> 0).
        noise_multiplier: ``sigma``, the noise's standard deviation in units
            of ``C`` (>= 0).
        seed: the seed of the noise: an integer, a key or raw key data.
        momentum: decay of the momentum trace; ``None`` keeps no trace.
        nesterov: use Nesterov's form of momentum.
        accumulator_dtype: storage dtype of the trace (default: the
            parameter's).
        stochastic_rounding: round a bfloat16 trace stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` taking per-example
        gradients.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.zeros(2)}
        >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.5, 0.0]])}  # B = 2
        >>> tx = jr.dpsgd(1.0, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
        >>> updates, _ = tx.update(per_example, tx.init(params), params)
        >>> updates["w"]  # -([3, 4] / 5 + [0.5, 0]) / 2
        Array([-0.55, -0.4 ], dtype=float32)

    References:
        Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang, "Deep
        Learning with Differential Privacy", CCS 2016 (arXiv:1607.00133).
        Verified against ``optax.contrib.dpsgd``.
    """
    step = dpsgd_step(
        learning_rate=learning_rate,
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        seed=seed,
        momentum=momentum,
        nesterov=nesterov,
        accumulator_dtype=accumulator_dtype,
        stochastic_rounding=stochastic_rounding,
        rounding_seed=rounding_seed,
    )

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        del extra_args
        _check_batch_axis(updates, params)
        summed, batch_size = clipped_sum(updates, l2_norm_clip)
        return step.update(summed, state, params, batch_size=batch_size)

    return optax.GradientTransformationExtraArgs(step.init, update)


def optax_dpsgd_quietly(**kwargs: Any) -> optax.GradientTransformation:
    """``optax.contrib.dpsgd``, without its warning that ``seed`` is deprecated.

    optax 0.2.8's ``dpsgd`` passes its own required ``seed`` to the
    deprecated argument of ``differentially_private_aggregate``.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.contrib.dpsgd(**kwargs)


optax_dpsgd_quietly.__signature__ = inspect.signature(optax.contrib.dpsgd)

SPEC = RuleSpec(
    name="dpsgd",
    factory=dpsgd,
    hyperparams={
        "learning_rate": 1e-3,
        "l2_norm_clip": 100.0,
        "noise_multiplier": 1e-4,
        "seed": 0,
        "momentum": 0.9,
    },
    reference="optax.contrib.dpsgd",
    reference_factory=optax_dpsgd_quietly,
    reference_cases=(
        {
            "learning_rate": 1e-2,
            "l2_norm_clip": 1.0,
            "noise_multiplier": 0.5,
            "seed": 0,
        },
        {
            "learning_rate": 1e-2,
            "l2_norm_clip": 2.0,
            "noise_multiplier": 0.1,
            "seed": 3,
            "momentum": 0.9,
        },
        {
            "learning_rate": optax.linear_schedule(1e-2, 1e-3, 50),
            "l2_norm_clip": 0.5,
            "noise_multiplier": 1.0,
            "seed": 1,
            "momentum": 0.5,
            "nesterov": True,
        },
    ),
)
