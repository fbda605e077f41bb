"""L-BFGS: a quasi-Newton direction from past differences, and a line search."""

import functools
import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import (
    Array,
    Slot,
    abs_sq,
    checked_scalar_or_schedule,
    composite,
    fill_like,
    init_with_last_field,
    real_dtype,
    replicated,
    rule,
    split_last_field,
)
from jaxopt_rules.rules._spec import RuleSpec
from jaxopt_rules.rules._tree_sums import inner


def _memory_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """A memory slot: ``memory_size`` differences of the parameter's shape."""
    return (int(hyper["memory_size"]), *shape)


@rule(
    name="lbfgs_memory",
    slots={
        "params": Slot(),
        "updates": Slot(),
        "diff_params_memory": Slot(shape=_memory_shape),
        "diff_updates_memory": Slot(shape=_memory_shape),
    },
    static=("memory_size",),
    extra_args=("index",),
    constraints={"memory_size": ">= 1"},
    complex_params=True,
)
def lbfgs_memory(
    grad: Array,
    params: Array,
    updates: Array,
    diff_params_memory: Array,
    diff_updates_memory: Array,
    index: Array,
    param: Array,
    step: Array,
    *,
    memory_size: int = 10,
) -> tuple[Array, Array, Array, Array, Array]:
    """L-BFGS's per-leaf memory: this step's differences written at ``index``.

    ``dw = theta_t - theta_{t-1}`` and ``du = g_t - g_{t-1}`` (zero at the
    first step, which has no previous point) go into the ring buffers at
    ``index`` (the build function's ``(count - 1) % memory_size``); the
    parameter and gradient are kept for the next step. The gradient passes
    through unchanged: :func:`scale_by_lbfgs` preconditions it with sums over
    the whole tree.
    """
    del memory_size
    first = step == 1
    dw = jnp.where(first, jnp.zeros_like(param), param - params)
    du = jnp.where(first, jnp.zeros_like(grad), grad - updates)
    return (
        grad,
        param,
        grad,
        diff_params_memory.at[index].set(dw.astype(diff_params_memory.dtype)),
        diff_updates_memory.at[index].set(du.astype(diff_updates_memory.dtype)),
    )


class ScaleByLbfgsState(NamedTuple):
    """L-BFGS's state: optax's fields (``ScaleByLBFGSState``), in optax's order."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array


class ScaleByLbfgsRoundingState(NamedTuple):
    """:class:`ScaleByLbfgsState` with the key of stochastic rounding."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    rounding_key: jax.Array
    weights_memory: jax.Array


class LbfgsState(NamedTuple):
    """:func:`lbfgs`'s state: the direction's fields and the line search's state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array
    linesearch_state: Any


class LbfgsRoundingState(NamedTuple):
    """:class:`LbfgsState` with the key of stochastic rounding."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    rounding_key: jax.Array
    weights_memory: jax.Array
    linesearch_state: Any


def _floating(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _real_vdot(a: Any, b: Any) -> Array:
    """``Re <a, b>`` over the floating leaves (``a`` conjugated), at full precision.

    Each leaf's product is the contraction optax's ``tree.vdot`` uses, added
    leaf after leaf, so the sums round as optax's.
    """
    terms = [
        jnp.real(inner(jnp.conj(x) if jnp.iscomplexobj(x) else x, y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if _floating(x)
    ]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros(())


def _sq_norm(a: Any) -> Array:
    """``sum |a|**2`` over the floating leaves (as optax's ``tree.norm``)."""
    terms = [jnp.sum(abs_sq(x)) for x in jax.tree.leaves(a) if _floating(x)]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros(())


def _difference(a: Any, b: Any, params: Any) -> Any:
    """``a - b`` on the leaves where ``params`` is floating (others: ``a``)."""
    return jax.tree.map(lambda p, x, y: x - y if _floating(p) else x, params, a, b)


def _inner_dtype(params: Any) -> Any:
    """The real dtype of inner products over ``params``: its floats, promoted."""
    floats = [
        real_dtype(jnp.result_type(x)) for x in jax.tree.leaves(params) if _floating(x)
    ]
    return jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)


def _settled(state: Any, dtype: Any) -> Any:
    """The line search's state with strong types, its wide float scalars narrowed.

    optax's zoom line search leaves weakly typed scalars after ``init`` (a
    jitted step would trace twice) and keeps its errors in the default float
    dtype, float64 under x64 whatever the parameters': each weak leaf gets a
    strong copy, and floating scalars wider than ``dtype`` are cast down to it.
    """

    def settle(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        if (
            x.ndim == 0
            and jnp.issubdtype(x.dtype, jnp.floating)
            and jnp.finfo(x.dtype).bits > jnp.finfo(dtype).bits
        ):
            return x.astype(dtype)
        if jax.typeof(x).weak_type:
            return jnp.array(x, dtype=x.dtype)
        return x

    return jax.tree.map(settle, state)


class _Initable(NamedTuple):
    """What ``optax.tree_utils.tree_map_params`` needs of a transform: ``init``."""

    init: Any


def _replicated(tree: Any) -> Any:
    """Every array of ``tree`` replicated where it is sharded over explicit axes."""
    return jax.tree.map(replicated, tree)


def _resharded_like(tree: Any, like: Any) -> Any:
    """``tree`` in ``like``'s shardings where those are over explicit axes."""

    def reshard(x: Any, ref: Any) -> Any:
        sharding = jax.typeof(ref).sharding
        mesh = getattr(sharding, "mesh", None)
        if mesh is None or mesh.empty or replicated(ref) is ref:
            return x
        return jax.sharding.reshard(x, sharding.spec)

    return jax.tree.map(reshard, tree, like)


def _at(memory: Any, i: Array) -> Any:
    """Entry ``i`` of every leaf's ring buffer."""
    return jax.tree.map(lambda m: m[i] if _floating(m) else m, memory)


def _plus(vec: Any, scale: Array, direction: Any) -> Any:
    """``vec + scale * direction`` on floating leaves, in ``vec``'s dtypes."""
    return jax.tree.map(
        lambda v, d: (v + scale * d).astype(v.dtype) if _floating(v) else v,
        vec,
        direction,
    )


def two_loop(
    grads: Any,
    diff_params_memory: Any,
    diff_updates_memory: Any,
    rhos: Array,
    gamma: Array,
    oldest: Array,
) -> Any:
    """``H grads`` for the L-BFGS inverse-Hessian approximation (Nocedal & Wright 7.4).

    ``H`` starts from ``gamma I`` and takes one BFGS update per stored pair
    ``(s_i, y_i)`` with weight ``rho_i = 1 / <y_i, s_i>`` (0 for an empty
    entry, which then changes nothing), oldest first; ``oldest`` is the ring
    buffers' index of the oldest pair.
    """
    m = rhos.shape[0]
    order = (oldest + jnp.arange(m)) % m  # oldest .. newest

    def backward(q: Any, i: Array) -> tuple[Any, Array]:
        s, y = _at(diff_params_memory, i), _at(diff_updates_memory, i)
        alpha = rhos[i] * _real_vdot(s, q)
        return _plus(q, -alpha, y), alpha

    q, alphas = jax.lax.scan(backward, grads, order, reverse=True)
    r = jax.tree.map(lambda x: (gamma * x).astype(x.dtype) if _floating(x) else x, q)

    def forward(r: Any, i_alpha: tuple[Array, Array]) -> tuple[Any, None]:
        i, alpha = i_alpha
        s, y = _at(diff_params_memory, i), _at(diff_updates_memory, i)
        beta = rhos[i] * _real_vdot(y, r)
        return _plus(r, alpha - beta, s), None

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    return r


def _direction(
    memory_size: int,
    scale_init_precond: bool,
    storage: Mapping[str, Any],
) -> optax.GradientTransformationExtraArgs:
    """The L-BFGS direction ``H_t g_t``: the memory rule and the two-loop recursion."""
    if isinstance(memory_size, bool) or not memory_size >= 1:
        raise ValueError(f"lbfgs: memory_size must be >= 1, got {memory_size!r}")
    memory = lbfgs_memory(memory_size=memory_size, **storage)
    state_class: Any = (
        ScaleByLbfgsRoundingState
        if storage.get("stochastic_rounding")
        else ScaleByLbfgsState
    )

    # The weights in the dtype of the inner products: the parameters'
    # floating dtypes promoted (optax keeps the default float dtype, float64
    # under x64 whatever the parameters).
    init = init_with_last_field(
        memory.init,
        state_class,
        lambda params: jnp.zeros(memory_size, _inner_dtype(params)),
    )

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        del extra_args
        if params is None:
            raise ValueError(
                "lbfgs: update needs params (L-BFGS remembers differences of "
                "parameters)"
            )
        inner, _ = split_last_field("lbfgs", state, state_class, memory.init, params)
        count = state.count
        newest = (count - 1) % memory_size
        memory_state: Any
        passed, memory_state = memory.update(updates, inner, params, index=newest)
        # This step's pair, from the inputs: reading it back from the ring
        # buffers at a traced index makes XLA copy both buffers (80 bytes per
        # parameter at memory_size=10); these are the values written there.
        s = _difference(params, state.params, params)
        y = _difference(updates, state.updates, params)
        sy = _real_vdot(y, s)
        rho = jnp.where(count > 0, jnp.where(sy == 0.0, 0.0, 1.0 / sy), 0.0)
        rhos = state.weights_memory.at[newest].set(rho)
        if scale_init_precond:
            yy = _sq_norm(y)
            gamma = jnp.where(yy > 0.0, sy / yy, 1.0)
            # First step: a capped inverse gradient norm (optax's heuristic).
            first = jnp.minimum(1.0, 1.0 / jnp.sqrt(_sq_norm(updates)))
            gamma = jnp.where(count > 0, gamma, first)
        else:
            gamma = jnp.asarray(1.0)
        direction = two_loop(
            updates,
            memory_state.diff_params_memory,
            memory_state.diff_updates_memory,
            rhos,
            gamma,
            count % memory_size,
        )
        # Leaves the rule does not run (integer counters) keep its output.
        direction = jax.tree.map(
            lambda x, r: r if _floating(x) else x, passed, direction
        )
        new_fields: Any = memory_state
        return direction, state_class(*new_fields, rhos)

    return optax.GradientTransformationExtraArgs(init, update)


@composite(lbfgs_memory, static_args=("scale_init_precond",))
def scale_by_lbfgs(
    memory_size: int = 10,
    scale_init_precond: bool = True,
    *,
    params_dtype: Any | None = None,
    updates_dtype: Any | None = None,
    diff_params_memory_dtype: Any | None = None,
    diff_updates_memory_dtype: Any | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The L-BFGS direction: the gradient times an inverse-Hessian approximation.

    A drop-in for ``optax.scale_by_lbfgs`` (same arguments, defaults, state
    fields and numbers), plus a storage dtype per memory slot and stochastic
    rounding. ``update`` needs ``params``. It returns ``H_t g_t`` (to be
    negated and scaled: :func:`lbfgs` chains it with a step size and a line
    search).

    Update (``t`` counts updates from 1, ``m = memory_size``)::

        s_t   = theta_t - theta_{t-1},  y_t = g_t - g_{t-1}   (zero at t = 1)
        rho_t = 1 / Re<y_t, s_t>        (0 where that is 0)
        gamma = Re<y_t, s_t> / |y_t|^2  (t > 1; 1 if y_t = 0)
                min(1, 1 / |g_1|)       (t = 1)
        H_t   = the BFGS updates of gamma I by the last m pairs (s_i, y_i)
        u_t   = H_t g_t                 (two-loop recursion)

    with ``gamma = 1`` when ``scale_init_precond`` is off. The first step's
    ``gamma`` (a trust region of radius 1) is optax's heuristic, not in the
    references. Complex parameters use the real part of the inner products.

    Why this is not one rule function: the recursion takes ``2 m`` inner
    products over the whole tree, each depending on the previous one. The
    per-leaf part (the ring buffers of differences, their dtypes and shapes,
    the stored point) is one rule (``lbfgs_memory``); this function keeps
    the weights ``rho`` and runs the recursion.

    Args:
        memory_size: number of difference pairs kept (>= 1).
        scale_init_precond: start from ``gamma I`` (see above) instead of
            ``I``.
        params_dtype: storage dtype of the previous parameters (default: the
            parameter's).
        updates_dtype: storage dtype of the previous gradient.
        diff_params_memory_dtype: storage dtype of the ``s`` buffer.
        diff_updates_memory_dtype: storage dtype of the ``y`` buffer.
        stochastic_rounding: round slots stored in bfloat16 stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs
        ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.scale_by_lbfgs()
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> direction, state = tx.update(params, tx.init(params), params)
        >>> direction["w"]  # the first step: g / max(1, |g|)
        Array([0.6, 0.8], dtype=float32)

    References:
        Nocedal and Wright, "Numerical Optimization", 1999, algorithms 7.4 and
        7.5; Liu and Nocedal, "On the limited memory BFGS method for large
        scale optimization", Mathematical Programming 45, 1989.
        Verified against ``optax.scale_by_lbfgs``.
    """
    return _direction(
        memory_size,
        scale_init_precond,
        {
            "params_dtype": params_dtype,
            "updates_dtype": updates_dtype,
            "diff_params_memory_dtype": diff_params_memory_dtype,
            "diff_updates_memory_dtype": diff_updates_memory_dtype,
            "stochastic_rounding": stochastic_rounding,
            "rounding_seed": rounding_seed,
        },
    )


DEFAULT_LINESEARCH: Any = (
    inspect.signature(optax.lbfgs).parameters["linesearch"].default
)
"""optax's default line search for L-BFGS (the same object): a zoom line search
for the strong Wolfe conditions, at most 20 steps, first guess 1."""


@composite(
    lbfgs_memory,
    update_args=("value", "grad", "value_fn"),
    static_args=("scale_init_precond", "linesearch"),
)
def lbfgs(
    learning_rate: optax.ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: optax.GradientTransformation | None = DEFAULT_LINESEARCH,
    *,
    params_dtype: Any | None = None,
    updates_dtype: Any | None = None,
    diff_params_memory_dtype: Any | None = None,
    diff_updates_memory_dtype: Any | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L-BFGS: a quasi-Newton direction, a step size, and a line search.

    A drop-in for ``optax.lbfgs`` (same arguments, defaults and numbers),
    plus a storage dtype per memory slot and stochastic rounding: the
    direction of :func:`scale_by_lbfgs`, scaled by ``-learning_rate`` (or
    ``-1``), then by the line search. With the default line search,
    ``update`` needs ``params``, ``value`` (the loss at ``params``), ``grad``
    (its gradient, usually the ``updates`` passed) and ``value_fn`` (the loss
    as a function of the parameters), as optax's. The state is one NamedTuple
    (:class:`LbfgsState`: optax's L-BFGS fields and the line search's state)
    where optax keeps a chain; ``optax.value_and_grad_from_state(loss)``
    finds the line search's last evaluation in it, and ``jr.from_optax`` /
    ``jr.to_optax`` convert between the two.

    Other extra arguments of ``update`` reach the line search (which hands
    them to ``value_fn``, for a batch: ``value_fn(params, batch=...)``) when
    ``value_fn`` takes them by name, and are ignored otherwise, as the optax
    contract has it for extra arguments; ``optax.lbfgs`` passes them all, and
    its line search then fails on one ``value_fn`` does not take.

    Update::

        d_t   = -lr H_t g_t                (scale_by_lbfgs; lr = 1 by default)
        eta_t = the line search's step along d_t (1 without one)
        u_t   = eta_t d_t

    The line search is a separate transform, optax's by default (the same
    object as ``optax.lbfgs``'s default: a zoom line search for the strong
    Wolfe conditions); any optax line search, or ``None``, may be passed.

    Why this is not one rule function: the direction is a recursion of inner
    products over the whole tree (see :func:`scale_by_lbfgs`, built on the
    per-leaf rule ``lbfgs_memory``), and the line search evaluates the loss
    at trial points.

    Args:
        learning_rate: a scale of the direction, a number or a schedule;
            ``None`` (default) leaves the step size to the line search.
        memory_size: number of difference pairs kept (>= 1).
        scale_init_precond: start each recursion from a scaled identity.
        linesearch: an optax transform scaling the direction by a step size
            (default: optax's zoom line search); ``None`` for none.
        params_dtype: storage dtype of the previous parameters.
        updates_dtype: storage dtype of the previous gradient.
        diff_params_memory_dtype: storage dtype of the ``s`` buffer.
        diff_updates_memory_dtype: storage dtype of the ``y`` buffer.
        stochastic_rounding: round slots stored in bfloat16 stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is an
        :class:`LbfgsState`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> import optax
        >>> loss = lambda w: jnp.sum((w - 1.0) ** 2)
        >>> w = jnp.zeros(3)
        >>> tx = jr.lbfgs()
        >>> state = tx.init(w)
        >>> for _ in range(2):
        ...     value, grad = jax.value_and_grad(loss)(w)
        ...     updates, state = tx.update(
        ...         grad, state, w, value=value, grad=grad, value_fn=loss
        ...     )
        ...     w = optax.apply_updates(w, updates)
        >>> w
        Array([1., 1., 1.], dtype=float32)

    References:
        Nocedal and Wright, "Numerical Optimization", 1999, algorithms 7.4 and
        7.5; Liu and Nocedal, "On the limited memory BFGS method for large
        scale optimization", Mathematical Programming 45, 1989.
        Verified against ``optax.lbfgs``.
    """
    direction = _direction(
        memory_size,
        scale_init_precond,
        {
            "params_dtype": params_dtype,
            "updates_dtype": updates_dtype,
            "diff_params_memory_dtype": diff_params_memory_dtype,
            "diff_updates_memory_dtype": diff_updates_memory_dtype,
            "stochastic_rounding": stochastic_rounding,
            "rounding_seed": rounding_seed,
        },
    )
    step_size = checked_scalar_or_schedule(
        "lbfgs", "learning_rate", learning_rate, none_ok=True
    )
    search = _on_floating_leaves(optax.identity() if linesearch is None else linesearch)
    rounding = stochastic_rounding
    state_class: Any = LbfgsRoundingState if rounding else LbfgsState
    direction_class: Any = ScaleByLbfgsRoundingState if rounding else ScaleByLbfgsState

    init = init_with_last_field(direction.init, state_class, search.init)

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        inner, search_state = split_last_field(
            "lbfgs", state, state_class, direction_class, params
        )
        d, inner = direction.update(updates, inner, params)
        if step_size is None:
            scale: Any = -1.0
        else:
            lr = step_size(state.count) if callable(step_size) else step_size
            scale = -jnp.asarray(lr)
        d = jax.tree.map(
            lambda x: (jnp.asarray(scale, x.dtype) * x) if _floating(x) else x, d
        )
        new_updates, search_state = search.update(d, search_state, params, **extra_args)
        new_fields: Any = inner
        return new_updates, state_class(*new_fields, search_state)

    return optax.GradientTransformationExtraArgs(init, update)


_LINESEARCH_ARGS = ("value", "grad", "value_fn")


def _on_floating_leaves(
    linesearch: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``linesearch`` run on the floating leaves, with the extra arguments it can take.

    optax's line searches take their value dtype from the first leaf and add
    steps to every leaf, so an integer leaf (a step counter in a framework's
    tree) breaks them; here it is hidden from the line search (``None`` in
    its trees), held at its value in ``value_fn``, and its update is the
    direction's (zero). A tree with no leaves (``tree_map_params``'s
    placeholders) is initialised with a float32 scalar in front, removed
    after. The state's types are those ``update`` returns (optax's
    ``init`` leaves some weakly typed, so a jitted step would compile twice).
    Extra arguments: see :func:`_for_linesearch`.
    """
    search = optax.with_extra_args_support(linesearch)

    def view(tree: Any, params: Any) -> Any:
        return jax.tree.map(lambda p, x: x if _floating(p) else None, params, tree)

    def raw_init(floating: Any) -> Any:
        if jax.tree.leaves(floating):
            return search.init(floating)
        lead = jnp.zeros((), jnp.float32)
        structure = jax.tree.structure(floating)

        def pair(node: Any) -> bool:
            return (
                type(node) is tuple
                and len(node) == 2
                and jax.tree.structure(node[1]) == structure
            )

        return jax.tree.map(
            lambda node: node[1] if pair(node) else node,
            search.init((lead, floating)),
            is_leaf=pair,
        )

    def init(params: Any) -> Any:
        floating = view(params, params)
        state = raw_init(floating)
        if jax.tree.leaves(floating):
            # Parameter-shaped fields (the gradient kept for the next step)
            # sharded like their parameters: a zeros_like inside jax.jit does
            # not depend on the parameter, and lands on one device.
            state = optax.tree_utils.tree_map_params(
                _Initable(raw_init),
                lambda leaf, p: fill_like(p, 0, leaf.dtype) + leaf,
                state,
                floating,
            )
        return _settled(state, _inner_dtype(params))

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("lbfgs: update needs params (for the line search)")
        extra = _for_linesearch(extra_args)
        floating = view(params, params)
        # Under explicit sharding, optax's tree_vdot cannot contract a
        # sharded axis (optax 0.2.8 compares jax versions as strings and takes
        # jnp.vdot on jax 0.10), so the line search runs on replicated copies
        # and its results are resharded like the parameters.
        value_fn = extra.get("value_fn")
        if value_fn is not None:
            # value_fn's signature: optax's line search reads it to check
            # that the extra arguments it hands on are value_fn's.
            @functools.wraps(value_fn)
            def restored(trial: Any, **kwargs: Any) -> Any:
                trial = _resharded_like(trial, floating)
                full = jax.tree.map(
                    lambda p, x: x if _floating(p) else p, params, trial
                )
                return value_fn(full, **kwargs)

            extra["value_fn"] = restored
        if "grad" in extra:
            extra["grad"] = _replicated(view(extra["grad"], params))
        found, state = search.update(
            _replicated(view(updates, params)),
            _replicated(state),
            _replicated(floating),
            **extra,
        )
        found = _resharded_like(found, floating)
        if jax.tree.leaves(floating):
            state = optax.tree_utils.tree_map_params(
                _Initable(raw_init),
                lambda leaf, p: _resharded_like(leaf, p),
                state,
                floating,
            )
        new = jax.tree.map(
            lambda p, d, x: x if _floating(p) else d, params, updates, found
        )
        return new, _settled(state, _inner_dtype(params))

    return optax.GradientTransformationExtraArgs(init, update)


def _for_linesearch(extra_args: Mapping[str, Any]) -> dict[str, Any]:
    """The extra arguments the line search gets: its own, and those of ``value_fn``.

    optax's line searches hand every other extra argument to ``value_fn``
    (for a batch: ``value_fn(params, batch=...)``) and fail on one it does not
    take. Here an argument ``value_fn`` does not take is ignored, as the
    optax contract has it for extra arguments.
    """
    value_fn = extra_args.get("value_fn")
    passed = {k: v for k, v in extra_args.items() if k in _LINESEARCH_ARGS}
    others = {k: v for k, v in extra_args.items() if k not in _LINESEARCH_ARGS}
    if not others or value_fn is None:
        return passed
    try:
        parameters = inspect.signature(value_fn).parameters.values()
    except (TypeError, ValueError):  # no signature: hand it everything
        return dict(extra_args)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(extra_args)
    named = {
        p.name
        for p in parameters
        if p.kind
        in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return passed | {k: v for k, v in others.items() if k in named}


SPEC = RuleSpec(
    name="lbfgs",
    factory=lbfgs,
    # learning_rate=1.0 is the default's step (scale(-1)), given as a number
    # so that the kit's schedule and sweep checks have a step size to drive.
    hyperparams={"learning_rate": 1.0},
    reference="optax.lbfgs",
    reference_factory=optax.lbfgs,
    reference_cases=(
        {},
        {"memory_size": 3, "scale_init_precond": False},
        {"learning_rate": 0.05, "memory_size": 2, "linesearch": None},
        {"learning_rate": optax.linear_schedule(0.3, 0.1, 50), "linesearch": None},
    ),
)
