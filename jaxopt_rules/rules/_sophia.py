"""Sophia: clipped momentum preconditioned by an estimate of the Hessian's diagonal."""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from jaxopt_rules._core import (
    Array,
    Scalar,
    composite,
    lowest_float,
    random_like,
    rule,
    split_then_per_leaf,
)
from jaxopt_rules.logging._emit import emitter
from jaxopt_rules.rules._hessian_refresh import FloatingLeaves, estimate_then_step
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


class HutchinsonState(NamedTuple):
    """The estimator's PRNG key (optax's field name and layout)."""

    key: jax.Array


def hutchinson_estimator_diag_hessian(
    random_seed: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Hutchinson's estimate of the Hessian's diagonal, as an optax transform.

    ``update(updates, state, params, obj_fn=...)`` ignores ``updates`` and
    returns ``z * (H z)`` for Rademacher signs ``z`` (one draw per element),
    ``H z`` being the Hessian-vector product of ``obj_fn`` (a function of the
    parameters returning the scalar loss) at ``params``, by forward-over-reverse
    differentiation. Its expectation is ``diag(H)``.

    A drop-in for ``optax.contrib.hutchinson_estimator_diag_hessian``: the key
    is split as optax splits it (``key, sample = split(key)``, then one key
    per leaf from ``sample``), so the same seed draws the same signs. The
    signs are drawn in float32 and cast to the lowest-precision floating dtype
    of the parameters, as in optax. Leaves that are not floating (integer
    counters in a framework's tree) are held constant and get a zero estimate,
    where optax's ``jax.grad`` refuses them.

    Args:
        random_seed: the PRNG key (raw key data or a typed key; default
            ``jax.random.PRNGKey(0)``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is
        ``HutchinsonState(key)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> est = jr.hutchinson_estimator_diag_hessian()
        >>> params = {"w": jnp.array([1.0, 2.0])}
        >>> loss = lambda p: jnp.sum(3.0 * p["w"] ** 2)
        >>> diag, _ = est.update(None, est.init(params), params, obj_fn=loss)
        >>> diag["w"]
        Array([6., 6.], dtype=float32)

    References:
        Hutchinson, "A stochastic estimator of the trace of the influence
        matrix for Laplacian smoothing splines", 1990; Liu et al., "Sophia",
        2023 (Sophia-H).
    """

    def init(params: Any) -> HutchinsonState:
        del params
        key = jax.random.PRNGKey(0) if random_seed is None else random_seed
        return HutchinsonState(key=key)

    def update(
        updates: Any,
        state: HutchinsonState,
        params: Any = None,
        *,
        obj_fn: Callable[[Any], Array] | None = None,
        **extra_args: Any,
    ) -> tuple[Any, HutchinsonState]:
        del updates, extra_args
        if params is None:
            raise ValueError("hutchinson_estimator_diag_hessian: update needs params")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian: update needs obj_fn, the loss "
                "as a function of the parameters: tx.update(grads, state, params, "
                "obj_fn=lambda p: loss(p, batch))"
            )
        split = FloatingLeaves(params)
        leaves = jax.tree.leaves(params)
        key, keys = split_then_per_leaf(state.key, len(leaves))
        lowest = lowest_float(jnp.result_type(x) for x in split.moving)
        # Signs drawn in float32 and cast to the lowest floating dtype, as in
        # optax; each leaf's tangent is the same signs in its own dtype.
        signs = [
            random_like(
                k, jnp.zeros_like(x, jnp.float32), jax.random.rademacher
            ).astype(lowest)
            for k, x, f in zip(keys, leaves, split.floating, strict=True)
            if f
        ]
        tangents = [
            s.astype(jnp.result_type(x))
            for x, s in zip(split.moving, signs, strict=True)
        ]

        def loss_of_floats(xs: list[Any]) -> Array:
            return obj_fn(split.rebuild(xs))

        _, hvp = jax.jvp(jax.grad(loss_of_floats), (split.moving,), (tangents,))
        estimate = split.spread([h * s for h, s in zip(hvp, signs, strict=True)])
        return estimate, HutchinsonState(key=key)

    return optax.GradientTransformationExtraArgs(init, cast(Any, update))


@rule(
    name="sophia_moments",
    per_leaf={"weight_decay_mask": True},
    extra_args=("hessian", "refresh"),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": "> 0",
        "weight_decay": ">= 0",
        "gamma": "> 0",
        "clip_threshold": "> 0",
    },
)
def sophia_moments(
    grad: Array,
    mu: Array,
    nu: Array,
    hessian: Array,
    refresh: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    weight_decay_mask: Any = None,
    gamma: Scalar = 0.01,
    clip_threshold: Scalar | None = 1.0,
) -> tuple[Array, Array, Array]:
    """Sophia's per-leaf arithmetic, given this step's Hessian-diagonal estimate.

    ``hessian`` is the estimate when ``refresh`` holds (else ignored): the
    build function :func:`sophia` computes it every ``update_interval`` steps.
    """
    mu = b1 * mu + (1 - b1) * grad
    mu_hat = mu / (1 - b1**step)
    direction = mu_hat / jnp.maximum(gamma * nu, eps)  # the previous estimate
    if clip_threshold is not None:
        direction = jnp.clip(direction, -clip_threshold, clip_threshold)
    nu = jnp.where(refresh, b2 * nu + (1 - b2) * hessian, nu)
    if weight_decay_mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu, nu


DEFAULT_ESTIMATOR = hutchinson_estimator_diag_hessian()
"""Sophia's default Hessian estimator (Sophia-H), as optax's default."""


class SophiaState(NamedTuple):
    """Sophia's state: optax's fields (``count``, ``mu``, ``nu``, the estimator's)."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    nu: Any
    hessian_fn_state: Any


class SophiaRoundingState(NamedTuple):
    """:class:`SophiaState` with the key of stochastic rounding."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    nu: Any
    rounding_key: jax.Array
    hessian_fn_state: Any


@composite(
    sophia_moments,
    update_args=("obj_fn",),
    static_args=("hessian_diagonal_fn", "verbose"),
)
def sophia(
    learning_rate: optax.ScalarOrSchedule,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    gamma: Scalar = 0.01,
    clip_threshold: Scalar | None = 1.0,
    update_interval: Scalar = 10,
    hessian_diagonal_fn: optax.GradientTransformation | None = DEFAULT_ESTIMATOR,
    mu_dtype: Any | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Scalar = 0,
    *,
    nu_dtype: Any | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Sophia: clipped momentum divided by a running estimate of the Hessian diagonal.

    A drop-in for ``optax.contrib.sophia`` (same arguments, defaults, state
    fields and numbers), plus ``nu_dtype`` and stochastic rounding.
    ``update`` needs ``params`` and ``obj_fn``, the loss as a function of the
    parameters (``obj_fn=lambda p: loss(p, batch)``), which is handed to the
    Hessian estimator with every other extra argument.

    Update::

        m_t   = b1 m_{t-1} + (1 - b1) g_t
        d_t   = clip((m_t / (1 - b1**t)) / max(gamma h_{t-1}, eps), +-clip_threshold)
        h_t   = b2 h_{t-1} + (1 - b2) est_t   if (t - 1) % update_interval == 0
                h_{t-1}                        otherwise
        u_t   = -lr_t (d_t + wd * theta_{t-1})     (decay on masked leaves)

    where ``t`` counts updates from 1 and ``est_t`` is ``hessian_diagonal_fn``'s
    estimate (by default Hutchinson's ``z * (H z)``).

    The step reads the estimate before this step's refresh, as optax does. The
    estimator runs under ``lax.cond``, so its Hessian-vector product costs
    nothing on the other steps. Differences from the paper, all optax's: the
    first moment is bias-corrected; Hutchinson's probe vectors are Rademacher
    signs where the authors' code draws Gaussian ones; the step is clipped
    elementwise at ``clip_threshold`` after the division by ``gamma h`` (the
    paper's ``clip(m / max(gamma h, eps), 1)``, with ``rho`` folded into
    ``gamma``).

    Why this is not one rule function: the estimate is a Hessian-vector
    product of the whole loss, made every ``update_interval`` steps by any
    optax transform with state of its own. The per-leaf arithmetic is one rule
    (``sophia_moments``, which handles dtypes, schedules, masks and the
    slots); this function runs the estimator and hands its result to it.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum, in [0, 1).
        b2: decay of the Hessian-diagonal average, in [0, 1) (per refresh: the
            effective per-step decay is ``1 - (1 - b2) / update_interval``).
        eps: floor of ``gamma h`` (> 0).
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        weight_decay_mask: a pytree of booleans (a prefix of the params) or a
            function of the params returning one; ``None`` decays every leaf.
        gamma: scale of the Hessian estimate (> 0).
        clip_threshold: elementwise bound of the preconditioned step; ``None``
            does not clip.
        update_interval: steps between Hessian estimates (>= 1).
        hessian_diagonal_fn: an optax transform whose ``update(grads, state,
            params, **extra_args)`` returns the estimate (default:
            :func:`hutchinson_estimator_diag_hessian` seeded with 0, as optax's
            default; ``None`` means the same).
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        verbose: print the win rate (the fraction of elements not clipped)
            every ``print_win_rate_every_n_steps`` steps, as optax does
            (through the logging package's host callback, on the host).
        print_win_rate_every_n_steps: see ``verbose`` (>= 1 when verbose).
        nu_dtype: storage dtype of the Hessian average (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs
        ``params`` and ``obj_fn``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
        >>> params = {"w": jnp.zeros(2)}
        >>> tx = jr.sophia(0.1)
        >>> grads = {"w": jnp.array([-2.0, -2.0])}
        >>> updates, state = tx.update(grads, tx.init(params), params, obj_fn=loss)
        >>> updates["w"]  # clipped at the first step (no estimate yet)
        Array([0.1, 0.1], dtype=float32)

    References:
        Liu, Li, Hall, Liang and Ma, "Sophia: A Scalable Stochastic
        Second-order Optimizer for Language Model Pre-training", ICLR 2024
        (arXiv:2305.14342). Verified against ``optax.contrib.sophia``.
    """
    if not isinstance(update_interval, jax.Array):  # (tracers are arrays)
        if isinstance(update_interval, bool) or not update_interval >= 1:
            raise ValueError(
                f"sophia: update_interval must be >= 1, got {update_interval!r}"
            )
    if verbose and not isinstance(print_win_rate_every_n_steps, jax.Array):
        if not print_win_rate_every_n_steps >= 1:
            raise ValueError(
                "sophia: verbose=True prints every print_win_rate_every_n_steps "
                f"steps, which must be >= 1; got {print_win_rate_every_n_steps!r}"
            )
    moments = sophia_moments(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        gamma=gamma,
        clip_threshold=clip_threshold,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        stochastic_rounding=stochastic_rounding,
        rounding_seed=rounding_seed,
    )
    estimator = (
        DEFAULT_ESTIMATOR if hessian_diagonal_fn is None else hessian_diagonal_fn
    )
    state_class: Any = SophiaRoundingState if stochastic_rounding else SophiaState

    def print_win_rate(new: Any, old: Any) -> None:
        _print_win_rate(
            new, old, b1, gamma, eps, clip_threshold, print_win_rate_every_n_steps
        )

    return estimate_then_step(
        "sophia",
        moments,
        estimator,
        lambda count: jnp.equal(count % update_interval, 0),
        state_class,
        after=print_win_rate if verbose else None,
    )


def _print_win_rate(
    new: Any,
    old: Any,
    b1: Scalar,
    gamma: Scalar,
    eps: Scalar,
    clip_threshold: Scalar | None,
    every: Scalar,
) -> None:
    """Prints the fraction of elements whose step was not clipped, every ``every``."""
    if clip_threshold is None:
        return
    t = new.count.astype(jnp.float32)

    def not_clipped(m: Array, h: Array) -> Array:
        m = m.astype(jnp.float32) / (1 - jnp.asarray(b1, jnp.float32) ** t)
        d = m / jnp.maximum(gamma * h.astype(jnp.float32), eps)
        return jnp.sum(jnp.abs(d) < clip_threshold)

    counts = jax.tree.leaves(jax.tree.map(not_clipped, new.mu, old.nu))
    size = sum(x.size for x in jax.tree.leaves(new.mu))
    rate = jnp.sum(jnp.stack(counts)) / max(size, 1)
    emit = emitter(_print_rate)
    emit(new.count % every == 0, new.count, rate[None])


def _print_rate(fire: Any, count: Any, values: Any) -> None:
    """Host side of ``verbose``: optax's message, once per fired step (and run)."""
    for index in np.ndindex(*np.shape(fire)):
        if np.asarray(fire)[index]:
            print(f"Sophia optimizer win rate: {np.asarray(values)[index][0]}")  # noqa: T201


def optax_sophia_with_its_estimator(
    *, hessian_diagonal_fn: Any = None, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """``optax.contrib.sophia``, with optax's own estimator for the drop-in's default.

    The kit hands a reference the drop-in's defaults; where that is this
    package's Hutchinson estimator (or ``None``), the reference runs optax's
    default estimator instead, so that every number is optax's.
    """
    if hessian_diagonal_fn is None or hessian_diagonal_fn is DEFAULT_ESTIMATOR:
        hessian_diagonal_fn = optax.contrib.hutchinson_estimator_diag_hessian()
    return optax.contrib.sophia(hessian_diagonal_fn=hessian_diagonal_fn, **kwargs)


# Takes what optax's takes (the kit passes a reference only its own arguments).
optax_sophia_with_its_estimator.__signature__ = inspect.signature(optax.contrib.sophia)


SPEC = RuleSpec(
    name="sophia",
    factory=sophia,
    hyperparams={"learning_rate": 1e-2, "update_interval": 1},
    reference="optax.contrib.sophia",
    reference_factory=optax_sophia_with_its_estimator,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "update_interval": 3, "gamma": 0.05},
        {
            "learning_rate": 1e-2,
            "clip_threshold": None,
            "eps": 0.5,
            "weight_decay": 0.1,
            "weight_decay_mask": WEIGHT_DECAY_MASK,
            "update_interval": 1,
        },
        {
            "learning_rate": optax.linear_schedule(1e-2, 1e-3, 50),
            "b1": 0.9,
            "b2": 0.95,
            "clip_threshold": 0.5,
        },
    ),
)
