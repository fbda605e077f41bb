"""Moving a training run between optax's optimizers and this package's drop-ins."""

from collections.abc import Collection, Mapping
from typing import Any

import optax

from jaxopt_rules.checkpoint._convert import convert


def from_optax(
    optax_state: Any,
    tx: optax.GradientTransformation,
    params: Any,
    *,
    count: Any | None = None,
    rename: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
) -> Any:
    """Converts an optax optimizer's state into the state of ``tx``.

    A drop-in keeps one NamedTuple per rule (``jr.adam``: ``AdamState(count,
    mu, nu)``) where optax keeps a chain (``optax.adam``: ``(ScaleByAdamState(
    count, mu, nu), EmptyState())``, plus ``ScaleByScheduleState`` with a
    schedule, ``MaskedState`` with a weight-decay mask, ``TraceState`` for
    momentum). This builds ``tx``'s state for ``params`` and fills it by field
    name:

    * every slot (``mu``, ``nu``, ``trace``, ``sum_of_squares``) from the
      optax field of the same name (``rename={"our_name": "optax_name"}``
      where they differ; the catalog's drop-ins all use optax's names), with
      its tree structure and leaf shapes checked and its leaves cast to the
      target's storage dtype. A complex parameter's second moment, which
      optax keeps complex (``|g|**2`` with a zero imaginary part), becomes
      real; a non-zero imaginary part is refused. Where optax keeps a list
      of arrays per parameter and the drop-in one array (``optax.sm3``'s
      per-axis accumulators, end to end in ``jr.sm3``), the lists are
      joined, or split in the other direction (``to_optax``);
    * every ``count`` from the optax state's step count (all of its counts
      must agree), or from ``count`` where optax keeps none (``optax.sgd``
      without momentum, a rule without schedule or bias correction);
    * the stochastic-rounding key (``stochastic_rounding=True``) from
      ``tx.init(params)``.

    Any other mismatch is an error naming the field: a target slot the optax
    state lacks, or an optax field the target has no place for (the two
    optimizers were built with different options). ``optax.inject_hyperparams``
    states convert into ``jr.inject_hyperparams`` states (their
    ``hyperparams`` dicts match by name); to convert one into a plain rule's
    state, pass ``ignore=("hyperparams",)``.

    ``optax_state`` may be concrete or traced; ``params`` may be abstract
    (``jax.ShapeDtypeStruct`` leaves): the template is built with
    ``jax.eval_shape``. The result continues exactly where optax left off:
    ``tx.update`` then computes what the optax optimizer would have.

    Args:
        optax_state: the state of the optax optimizer (e.g. restored from a
            checkpoint of an ``optax.adam`` run).
        tx: the transform to continue with (``jr.adam(...)`` with the same
            hyperparameters), possibly inside ``optax.chain`` or
            ``jr.inject_hyperparams``.
        params: the parameters (or their abstract shapes) the states are for.
        count: the number of updates taken, where the optax state holds no
            count; when it holds one, ``count`` must agree with it.
        rename: target field name -> optax field name, where they differ.
        ignore: optax field names to drop knowingly.

    Returns:
        A state of ``tx`` (its own NamedTuple classes and dtypes).

    Raises:
        ValueError: a field without counterpart, a structure, shape or count
            mismatch, or a complex value with an imaginary part going into a
            real slot; the message names the field.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> grads = {"w": jnp.array([0.5, -0.5])}
        >>> optax_tx = optax.adam(0.1)
        >>> _, optax_state = optax_tx.update(grads, optax_tx.init(params))
        >>> tx = jr.adam(0.1)
        >>> state = jr.from_optax(optax_state, tx, params)
        >>> state.count, state.mu["w"]
        (Array(1, dtype=int32), Array([ 0.05, -0.05], dtype=float32))
        >>> jr.from_optax(optax.sgd(0.1).init(params), jr.sgd(0.1), params, count=7)
        SgdCountState(count=Array(7, dtype=int32))
    """
    return convert(
        optax_state,
        tx.init,
        params,
        direction="from_optax",
        rename=dict(rename or {}),
        count=count,
        ignore=ignore,
    )


def to_optax(
    state: Any,
    optax_tx: optax.GradientTransformation,
    params: Any,
    *,
    rename: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
) -> Any:
    """Converts this package's optimizer state into an optax optimizer's state.

    The inverse of :func:`from_optax`: builds ``optax_tx``'s state for
    ``params`` (its chain of ``ScaleByAdamState``, ``EmptyState``,
    ``ScaleByScheduleState``, ...) and fills it by field name: each optax
    slot from ``state``'s slot of the same name (``rename={"our_name":
    "optax_name"}`` where they differ), each of optax's counts from
    ``state.count``, with leaves cast to optax's dtypes (a real second moment
    of a complex parameter becomes complex, as optax keeps it). An optax field
    without counterpart in ``state`` is an error naming it; so is a slot of
    ``state`` that optax has no place for. The stochastic-rounding key, which
    optax has no use for, is dropped; a quantized state
    (:func:`~jaxopt_rules.quantized_state`) is dequantized.

    Args:
        state: a state of one of this package's transforms.
        optax_tx: the optax optimizer to continue with (e.g.
            ``optax.adam(...)`` with the same hyperparameters).
        params: the parameters (or their abstract shapes).
        rename: our field name -> optax field name, where they differ.
        ignore: field names of ``state`` to drop knowingly.

    Returns:
        A state of ``optax_tx``.

    Raises:
        ValueError: as :func:`from_optax`.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.adam(0.1)
        >>> _, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params))
        >>> optax_state = jr.to_optax(state, optax.adam(0.1), params)
        >>> type(optax_state[0]).__name__, optax_state[0].count
        ('ScaleByAdamState', Array(1, dtype=int32))
        >>> bool((optax_state[0].nu["w"] == state.nu["w"]).all())
        True
    """
    inverse = {optax_name: ours for ours, optax_name in (rename or {}).items()}
    return convert(
        state,
        optax_tx.init,
        params,
        direction="to_optax",
        rename=inverse,
        count=None,
        ignore=ignore,
    )
