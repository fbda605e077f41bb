"""Sophia-G: the authors' Sophia with the Gauss-Newton-Bartlett Hessian estimate."""

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, composite, rule
from jaxopt_rules.rules._hessian_refresh import FloatingLeaves, estimate_then_step
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


class GaussNewtonBartlettState(NamedTuple):
    """The estimator's PRNG key (raw key data), for the sampled labels."""

    key: jax.Array


def gauss_newton_bartlett_estimator(
    random_seed: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The Gauss-Newton-Bartlett estimate of the Hessian's diagonal (Sophia-G's).

    ``update(updates, state, params, logits_fn=...)`` ignores ``updates``;
    ``logits_fn`` maps the parameters to a classifier's logits, classes on
    the last axis and any number of batch axes (``B`` positions in all). It
    draws one label per position from the model's own distribution,
    ``y ~ softmax(logits)``, and returns

    .. code-block:: text

        g_hat = grad_theta  mean_b  cross_entropy(logits_b(theta), y_b)
        h_hat = B * g_hat * g_hat

    whose expectation over the labels is the diagonal of the Gauss-Newton
    matrix of the mean loss (Bartlett's identity: a sampled label's gradient
    has mean zero). One forward and one backward pass: the gradient is the
    pullback of ``(softmax(logits) - onehot(y)) / B``. Leaves that are not
    floating are held constant and get a zero estimate.

    The authors' training loop keeps ``g_hat ** 2`` and multiplies by the
    batch size inside the step (``SophiaG.step(bs=...)``); here the batch
    size is in the estimate, so ``sophia_g``'s ``rho`` is the paper's and the
    estimate is the same for any batch size. Positions to leave out (padding)
    are not supported: return the logits of the real positions only.

    Args:
        random_seed: the PRNG key of the label draws (raw key data or a typed
            key; default ``jax.random.PRNGKey(0)``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is
        ``GaussNewtonBartlettState(key)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> est = jr.gauss_newton_bartlett_estimator()
        >>> params = {"w": jnp.zeros((3, 2))}
        >>> x = jnp.ones((4, 3))
        >>> diag, _ = est.update(None, est.init(params), params,
        ...                      logits_fn=lambda p: x @ p["w"])
        >>> diag["w"].shape
        (3, 2)

    References:
        Liu, Li, Hall, Liang and Ma, "Sophia: A Scalable Stochastic
        Second-order Optimizer for Language Model Pre-training", ICLR 2024
        (arXiv:2305.14342), Algorithm 2; Bartlett, "Approximate confidence
        intervals", Biometrika 1953.
    """

    def init(params: Any) -> GaussNewtonBartlettState:
        del params
        key = jax.random.PRNGKey(0) if random_seed is None else random_seed
        return GaussNewtonBartlettState(key=key)

    def update(
        updates: Any,
        state: GaussNewtonBartlettState,
        params: Any = None,
        *,
        logits_fn: Callable[[Any], Array] | None = None,
        **extra_args: Any,
    ) -> tuple[Any, GaussNewtonBartlettState]:
        del updates, extra_args
        if params is None:
            raise ValueError("gauss_newton_bartlett_estimator: update needs params")
        if logits_fn is None:
            raise ValueError(
                "gauss_newton_bartlett_estimator: update needs logits_fn, the "
                "model's logits as a function of the parameters: tx.update(grads, "
                "state, params, logits_fn=lambda p: model(p, batch))"
            )
        split = FloatingLeaves(params)
        logits, pullback = jax.vjp(
            lambda xs: logits_fn(split.rebuild(xs)), split.moving
        )
        if jnp.ndim(logits) < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
            raise ValueError(
                "gauss_newton_bartlett_estimator: logits_fn must return real "
                f"logits with classes on the last axis, got {logits.dtype}"
                f"{list(jnp.shape(logits))}"
            )
        classes = logits.shape[-1]
        count = logits.size // classes
        key, sample = jax.random.split(state.key)
        wide = jnp.promote_types(logits.dtype, jnp.float32)
        z = jax.lax.stop_gradient(logits).astype(wide)
        labels = jax.random.categorical(sample, z, axis=-1)
        residual = jax.nn.softmax(z, axis=-1) - jax.nn.one_hot(
            labels, classes, dtype=wide
        )
        (grads,) = pullback((residual / count).astype(logits.dtype))
        estimate = [count * g * g for g in grads]
        return split.spread(estimate), GaussNewtonBartlettState(key=key)

    return optax.GradientTransformationExtraArgs(init, cast(Any, update))


@rule(
    name="sophia_g_moments",
    per_leaf={"weight_decay_mask": True},
    extra_args=("hessian", "refresh"),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "rho": "> 0",
        "eps": "> 0",
        "weight_decay": ">= 0",
    },
)
def sophia_g_moments(
    grad: Array,
    mu: Array,
    nu: Array,
    hessian: Array,
    refresh: Array,
    param: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    rho: Scalar = 0.04,
    eps: Scalar = 1e-15,
    weight_decay: Scalar = 0.1,
    weight_decay_mask: Any = None,
) -> tuple[Array, Array, Array]:
    """Sophia-G's per-leaf arithmetic, given this step's Hessian-diagonal estimate.

    ``hessian`` is the estimate when ``refresh`` holds (else ignored): the
    build function :func:`sophia_g` computes it every ``update_interval``
    steps, before the step that reads it.
    """
    nu = jnp.where(refresh, b2 * nu + (1 - b2) * hessian, nu)
    mu = b1 * mu + (1 - b1) * grad
    ratio = jnp.minimum(jnp.abs(mu) / (rho * nu + eps), 1)
    update = -learning_rate * jnp.sign(mu) * ratio
    if weight_decay_mask:
        update = update - learning_rate * weight_decay * param
    return update, mu, nu


DEFAULT_ESTIMATOR = gauss_newton_bartlett_estimator()
"""Sophia-G's estimator, seeded with 0."""


class SophiaGState(NamedTuple):
    """Sophia-G's state: step count, momentum, Hessian average, estimator state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    nu: Any
    hessian_fn_state: Any


class SophiaGRoundingState(NamedTuple):
    """:class:`SophiaGState` with the key of stochastic rounding."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    nu: Any
    rounding_key: jax.Array
    hessian_fn_state: Any


@composite(
    sophia_g_moments,
    update_args=("logits_fn",),
    static_args=("hessian_diagonal_fn",),
)
def sophia_g(
    learning_rate: optax.ScalarOrSchedule,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    rho: Scalar = 0.04,
    eps: Scalar = 1e-15,
    weight_decay: Scalar = 0.1,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    update_interval: Scalar = 10,
    hessian_diagonal_fn: optax.GradientTransformation | None = DEFAULT_ESTIMATOR,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Sophia-G: the authors' clipped, Hessian-scaled sign of the momentum.

    Liu et al.'s algorithm as their code (``SophiaG``, with the training
    loop's ``update_hessian`` every ``k`` steps) computes it. ``update`` needs
    ``params`` and ``logits_fn``, the model's logits on the step's batch as a
    function of the parameters (``logits_fn=lambda p: model(p, batch)``),
    which is handed to the Hessian estimator with every other extra argument.

    Update::

        h     = b2 h + (1 - b2) est(theta)     if t > 0 and t % update_interval == 0
        m     = b1 m + (1 - b1) g
        u     = -lr sign(m) min(|m| / (rho h + eps), 1) - lr wd theta

    where ``t`` counts the updates done before this one, ``est`` is
    ``hessian_diagonal_fn``'s estimate at the parameters
    given (by default :func:`gauss_newton_bartlett_estimator`'s
    ``B g_hat**2``) and the decay applies to masked leaves. Until the first
    estimate ``h = 0`` and the step is ``lr sign(m)``, as in the authors'
    loop, which estimates after every ``k``-th step, at the parameters and on
    the batch of the next one: here that is the estimate made at the start of
    that next update. There is no bias correction.

    Why this is not one rule function: the estimate is a gradient of the
    whole model's loss at labels sampled from its logits, made every
    ``update_interval`` steps by any optax transform with state of its own.
    The per-leaf arithmetic is one rule (``sophia_g_moments``); this function
    runs the estimator and hands its result to it.

    Differences from ``jr.sophia`` (optax's Sophia-H): no bias correction of
    ``m``; ``rho h + eps`` where optax takes ``max(gamma h, eps)``; the
    estimate is read in the step it is made; the first estimate is made
    after ``update_interval`` steps instead of at the first; the default
    estimate samples labels instead of Hutchinson's probes. The authors'
    ``bs`` (their step multiplies the estimate by it) is folded into the
    estimate: their run with ``bs`` equal to the estimator's batch is this
    one; with ``bs`` ``n`` times that batch (gradient accumulation), take
    ``rho`` ``n`` times theirs.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum, in [0, 1).
        b2: decay of the Hessian-diagonal average per estimate, in [0, 1).
        rho: scale of the Hessian estimate in the step's denominator (> 0):
            the fraction of elements clipped grows as it shrinks.
        eps: added to the denominator (> 0; the authors' 1e-15).
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        weight_decay_mask: a pytree of booleans (a prefix of the params) or a
            function of the params returning one; ``None`` decays every leaf.
        update_interval: steps between Hessian estimates (>= 1; the authors'
            ``k``, 10 in their GPT-2 runs).
        hessian_diagonal_fn: an optax transform whose ``update(grads, state,
            params, **extra_args)`` returns the estimate (default:
            :func:`gauss_newton_bartlett_estimator` seeded with 0; ``None``
            means the same; :func:`hutchinson_estimator_diag_hessian` with
            ``obj_fn=`` gives the authors' Sophia-H arithmetic).
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        nu_dtype: storage dtype of the Hessian average (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs
        ``params`` and ``logits_fn``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> params = {"w": jnp.zeros((2, 3))}
        >>> tx = jr.sophia_g(0.1, weight_decay=0.0)
        >>> grads = {"w": jnp.full((2, 3), -0.5)}
        >>> updates, state = tx.update(grads, tx.init(params), params,
        ...                            logits_fn=lambda p: x @ p["w"])
        >>> updates["w"][0]  # sign descent until the first estimate
        Array([0.1, 0.1, 0.1], dtype=float32)

    References:
        Liu, Li, Hall, Liang and Ma, "Sophia: A Scalable Stochastic
        Second-order Optimizer for Language Model Pre-training", ICLR 2024
        (arXiv:2305.14342). Verified against the authors' ``SophiaG``
        (``sophia-opt`` 0.2.2, their repository packaged).
    """
    if not isinstance(update_interval, jax.Array):  # (tracers are arrays)
        if isinstance(update_interval, bool) or not update_interval >= 1:
            raise ValueError(
                f"sophia_g: update_interval must be >= 1, got {update_interval!r}"
            )
    moments = sophia_g_moments(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        rho=rho,
        eps=eps,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        stochastic_rounding=stochastic_rounding,
        rounding_seed=rounding_seed,
    )
    state_class: Any = SophiaGRoundingState if stochastic_rounding else SophiaGState
    return estimate_then_step(
        "sophia_g",
        moments,
        DEFAULT_ESTIMATOR if hessian_diagonal_fn is None else hessian_diagonal_fn,
        lambda count: (count > 0) & jnp.equal(count % update_interval, 0),
        state_class,
    )


SPEC = RuleSpec(
    name="sophia_g",
    factory=sophia_g,
    hyperparams={"learning_rate": 1e-2, "update_interval": 2},
    authors=AuthorsReference(
        requirement="sophia-opt==0.2.2",
        optimizer="sophia_opt.SophiaG",
        probe_batch=16,
        cases=(
            ({"learning_rate": 1e-2, "update_interval": 2}, {"lr": 1e-2}),
            (
                {
                    "learning_rate": 2e-2,
                    "b1": 0.9,
                    "b2": 0.95,
                    "rho": 0.1,
                    "weight_decay": 0.2,
                    "update_interval": 5,
                },
                {"lr": 2e-2, "betas": (0.9, 0.95), "rho": 0.1, "weight_decay": 0.2},
            ),
            (
                {"learning_rate": 1e-2, "weight_decay": 0.0, "update_interval": 1},
                {"lr": 1e-2, "weight_decay": 0.0},
            ),
        ),
    ),
)
