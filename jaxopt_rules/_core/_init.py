"""The ``init`` half of a rule's transform: a state of zeros shaped like the params."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core._config import RuleConfig, leaf_arguments, per_leaf_values
from jaxopt_rules._core._leaves import (
    Kind,
    as_leaf,
    leaf_kind,
    lowest_float,
    slot_shape,
    storage_dtype,
    takes_hyperparameters,
)
from jaxopt_rules._core._random import initial_key
from jaxopt_rules._core._rounding import new_state_key
from jaxopt_rules._core._sharding import sharded_like
from jaxopt_rules._core._tree import fill_like, leaf_path


def _init_slot(
    config: RuleConfig,
    slot: str,
    values: Mapping[str, Any],
    p: Any,
    params: Any,
    i: int,
    per_leaf: Mapping[str, list[Any]] | None = None,
) -> Any:
    """One slot of one real or complex parameter leaf, in its storage dtype."""
    definition = config.definition
    option = dict(definition.slots)[slot]
    storage = storage_dtype(
        definition.name,
        slot,
        option,
        definition.dtype_args[slot],
        config.slot_dtypes[slot],
        p,
        params,
        i,
    )
    arguments = leaf_arguments(config, per_leaf, i)
    shape = slot_shape(option, p.shape, arguments)
    if callable(option.init):
        value = jnp.asarray(
            option.init(p, arguments)
            if takes_hyperparameters(option.init)
            else option.init(p)
        )
        if jnp.iscomplexobj(value) and not jnp.issubdtype(storage, jnp.complexfloating):
            raise TypeError(
                f"{definition.name}: the initial value of slot {slot!r} is complex "
                f"at {leaf_path(params, i)}, but the slot holds squared "
                "magnitudes and is real"
            )
        if tuple(shape) == tuple(p.shape):
            # Shaped like the parameter (PSGD's diagonal factors of a
            # vector): sharded like it, as a new buffer.
            return fill_like(
                p, sharded_like(jnp.broadcast_to(value, shape), p), storage
            )
        # A copy, always: an init that returns the parameter itself (a copy of
        # the initial weights) would otherwise share its buffer, and a step
        # that donates both params and state would donate it twice.
        return jnp.array(jnp.broadcast_to(value, shape), dtype=storage, copy=True)
    value = values[option.init] if isinstance(option.init, str) else option.init
    if tuple(shape) != tuple(p.shape):
        if tuple(shape[len(shape) - p.ndim :]) == tuple(p.shape):
            # A stack of parameter-shaped arrays (L-BFGS's ring buffers):
            # sharded like the parameter on its trailing axes.
            return jnp.broadcast_to(fill_like(p, value, storage), shape)
        return jnp.full(shape, value, storage)
    # Shaped like the parameter (always, or for this leaf): sharded like it.
    return fill_like(p, value, storage)


def _lowest_float(param_leaves: list[Any], kinds: list[Kind]) -> np.dtype:
    """The lowest-precision real dtype of the rule's leaves (float32 if none)."""
    return lowest_float(
        p.dtype
        for p, kind in zip(param_leaves, kinds, strict=True)
        if kind is not Kind.INERT
    )


def _init_tree_slot(
    config: RuleConfig,
    slot: str,
    values: Mapping[str, Any],
    params: Any,
    param_leaves: list[Any],
    kinds: list[Kind],
) -> jax.Array:
    """A per-tree slot: one real scalar, from its ``init`` (a function of the tree)."""
    definition = config.definition
    option = dict(definition.slots)[slot]
    dtype = config.slot_dtypes[slot] or _lowest_float(param_leaves, kinds)
    if callable(option.init):
        value = jnp.asarray(
            option.init(params, config.arguments)
            if takes_hyperparameters(option.init)
            else option.init(params)
        )
    else:
        value = jnp.asarray(
            values[option.init] if isinstance(option.init, str) else option.init
        )
    if value.shape != () or jnp.iscomplexobj(value):
        raise TypeError(
            f"{definition.name}: the initial value of the per-tree slot {slot!r} "
            f"must be a real scalar, got {value.dtype} of shape {value.shape}"
        )
    return jnp.array(value, dtype=dtype, copy=True)


def make_init(config: RuleConfig, state_cls: type) -> optax.TransformInitFn:
    """The ``init`` function of the transform for ``config``.

    Slots are built with tree maps only, so ``jax.eval_shape`` and
    ``optax.tree_utils.tree_map_params`` work and, under ``jit``, the state is
    sharded like the parameters. Inert (integer, boolean) leaves get zeros of
    their own dtype, as in optax. ``ShapeDtypeStruct`` leaves give the
    abstract state.
    """
    definition = config.definition

    def init_fn(params: optax.Params) -> Any:
        leaves = jax.tree.leaves(params)
        if any(isinstance(p, jax.ShapeDtypeStruct) for p in leaves):
            # Abstract parameters give abstract state (as jax.eval_shape does).
            return jax.eval_shape(init_fn, params)
        params = jax.tree.map(as_leaf, params)
        param_leaves, treedef = jax.tree.flatten(params)
        kinds = [
            leaf_kind(
                definition.name, definition.complex_params, params, i, p, "parameter"
            )
            for i, p in enumerate(param_leaves)
        ]
        count = jnp.zeros([], jnp.int32)
        values = config.values_at(count)
        tree_slots = set(definition.tree_slot_names)
        # Slot shapes see the leaf's own value of the per-leaf hyperparameters
        # with per_leaf_is_leaf (GaLore's dimension numbers); a weight-decay
        # mask is not read before the first update.
        per_leaf = (
            per_leaf_values(
                config,
                params,
                treedef,
                len(param_leaves),
                names=definition.per_leaf_is_leaf,
            )
            if definition.per_leaf_is_leaf
            else None
        )
        slots = {
            slot: _init_tree_slot(config, slot, values, params, param_leaves, kinds)
            if slot in tree_slots
            else treedef.unflatten(
                [
                    jnp.zeros_like(p)
                    if kind is Kind.INERT
                    else _init_slot(config, slot, values, p, params, i, per_leaf)
                    for i, (p, kind) in enumerate(zip(param_leaves, kinds, strict=True))
                ]
            )
            for slot in config.active_slots
        }
        if definition.takes_key:
            slots["rng_key"] = initial_key(config.rng_seed)
        if config.stochastic_rounding:
            slots["rounding_key"] = new_state_key(config.rounding_seed)
        return state_cls(count, **slots)

    return init_fn
