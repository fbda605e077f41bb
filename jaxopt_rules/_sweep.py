"""A hyperparameter sweep as one transform: N runs of a rule, vmapped, one program."""

from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._inject import inject_hyperparams


def _check_lengths(name: str, values: Mapping[str, jax.Array]) -> None:
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in values.items()}
    bad = [k for k, n in lengths.items() if n is None]
    if bad:
        raise ValueError(
            f"{name}: swept hyperparameters need one value per run (a 1-d "
            f"sequence); got scalars for {bad}"
        )
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"{name}: every swept hyperparameter needs the same number of "
            f"values; got {lengths}"
        )


def _shared(state: Any, swept: Collection[str]) -> Any:
    """Which leaves of a sweep's state are one value for all runs.

    The step counts (integer ``count`` fields) and the integer hyperparameters
    that are not swept (a refresh interval): the runs step together and were
    built with the same fixed values.
    """

    def is_shared(path: Any, leaf: Any) -> bool:
        if not (
            jnp.issubdtype(jnp.result_type(leaf), jnp.integer) and jnp.ndim(leaf) == 1
        ):
            return False
        last: Any = path[-1] if path else None
        if isinstance(last, jax.tree_util.GetAttrKey):
            return last.name == "count"
        above: Any = path[-2] if len(path) > 1 else None
        return (
            isinstance(last, jax.tree_util.DictKey)
            and isinstance(above, jax.tree_util.GetAttrKey)
            and above.name == "hyperparams"
            and last.key not in swept
        )

    return jax.tree_util.tree_map_with_path(is_shared, state)


def sweep(
    factory: Callable[..., optax.GradientTransformation],
    swept: Mapping[str, Any],
    **fixed: Any,
) -> optax.GradientTransformationExtraArgs:
    """N runs of a rule, one per value of its swept hyperparameters, as one transform.

    The swept hyperparameters are injected (``inject_hyperparams``), so they
    live in the state: the whole sweep is one program (``jax.vmap`` over the
    runs). Run ``init`` outside the jitted training function and pass the
    state in, and the values are inputs of that program, not constants in
    it: a new grid of the same length reuses it (and the persistent
    compilation cache). Run ``i`` computes exactly what
    ``factory(**fixed, **{k: v[i]})`` computes on its own. The runs step
    together: their step counts (the states' integer ``count`` fields) and
    the integer hyperparameters not swept (a refresh interval) are read from
    the first run, so a rule that branches on the count (a preconditioner
    refreshed every k steps behind ``lax.cond``) branches once for all runs
    instead of computing every branch in each.

    Parameters, gradients, updates and states carry a leading axis of length
    N, one entry per run (stack the initial parameters, or broadcast one
    tree with ``jax.tree.map(lambda x: jnp.stack([x] * n), params)``).
    Extra arguments of ``update`` (``value=``) are batched the same way; a
    function (``obj_fn=``, the loss of one run's parameters) is called on
    each run's parameters.

    Args:
        factory: a rule factory (this package's or optax's).
        swept: hyperparameter name -> a 1-d sequence of N values (all of the
            same length N); each must be a numeric hyperparameter.
        **fixed: the other arguments of ``factory``, the same for every run.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` over batched trees;
        ``state.hyperparams[name]`` holds each run's value.

    Raises:
        ValueError: no swept hyperparameter, a scalar instead of a sequence,
            or sequences of different lengths.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> tx = jr.sweep(jr.adamw, {"learning_rate": [0.1, 0.01, 0.001]},
        ...               weight_decay=0.0)
        >>> params = {"w": jnp.ones((3, 2))}          # 3 runs of a 2-vector
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones((3, 2))}, state, params)
        >>> updates["w"][:, 0]
        Array([-0.1  , -0.01 , -0.001], dtype=float32)
    """
    name = getattr(factory, "__name__", "sweep")
    if not swept:
        raise ValueError(f"{name}: sweep needs at least one swept hyperparameter")
    overlap = sorted(set(swept) & set(fixed))
    if overlap:
        raise ValueError(f"{name}: {overlap} given both as swept and as fixed")
    values = {k: jnp.asarray(v) for k, v in swept.items()}
    _check_lengths(name, values)
    injected = inject_hyperparams(factory)(
        **fixed, **{k: v[0] for k, v in values.items()}
    )

    def init_one(params: Any, hyper: Mapping[str, jax.Array]) -> Any:
        # Built with the run's own values: a rule may read a hyperparameter
        # in init (rprop's initial step sizes).
        return inject_hyperparams(factory)(**fixed, **hyper).init(params)

    def init(params: Any) -> Any:
        return jax.vmap(init_one)(params, values)

    def update(
        updates: Any, state: Any, params: Any = None, **extra: Any
    ) -> tuple[Any, Any]:
        # A function (obj_fn, value_fn) is the same for every run and is
        # called on each run's parameters; arrays are batched.
        functions = {k: v for k, v in extra.items() if callable(v)}
        arrays = {k: v for k, v in extra.items() if k not in functions}

        def one(u: Any, s: Any, p: Any, e: Mapping[str, Any]) -> tuple[Any, Any]:
            return injected.update(u, s, p, **e, **functions)

        # The runs step together, so their step counts (and fixed integer
        # hyperparameters, a refresh interval) are one value: read unbatched,
        # a branch on the count (a preconditioner refreshed every k steps
        # behind lax.cond) stays a branch under vmap instead of a select that
        # runs every branch. The new counts come back batched.
        shared = _shared(state, values)
        state = jax.tree.map(lambda x, c: x[0] if c else x, state, shared)
        axes = jax.tree.map(lambda c: None if c else 0, shared)
        return jax.vmap(one, in_axes=(0, axes, 0, 0))(updates, state, params, arrays)

    return optax.GradientTransformationExtraArgs(init, update)
