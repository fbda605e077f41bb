"""The ``update`` half of a rule's transform, as a sequence of named phases.

:func:`make_update` returns ``update(updates, state, params=None, **extra)``,
which runs, in order:

1. :func:`check_state`: the state is this transform's (its class, its fields);
2. :func:`read_gradients`: the gradient leaves and their kinds;
3. :func:`read_slots`: each active slot's leaves, checked against the
   gradients (tree, shape, real or complex);
4. :func:`read_params`: the parameter leaves, checked the same way;
5. :class:`Scalars`: hyperparameter values at this step (schedules
   evaluated), cast once per compute dtype, and per-leaf hyperparameters;
6. :func:`leaf_inputs`: each leaf's arrays in its compute dtype;
7. :func:`global_totals`: the rule's ``global_stats``, summed over leaves;
8. :func:`run_leaves`: the rule on every leaf (:class:`LeafRunner`), each
   output checked by :func:`check_output`;
9. :func:`repack`: the updates and the new state, in their storage dtypes.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core._config import RuleConfig, leaf_arguments, per_leaf_values
from jaxopt_rules._core._definition import RuleDefinition
from jaxopt_rules._core._interpreter import LeafRunner
from jaxopt_rules._core._leaves import (
    Kind,
    as_leaf,
    cast_value,
    compute_dtype,
    leaf_kind,
    narrower,
    real_dtype,
    slot_shape,
)
from jaxopt_rules._core._random import split_then_per_leaf
from jaxopt_rules._core._report import report
from jaxopt_rules._core._rounding import slot_keys
from jaxopt_rules._core._state import safe_increment
from jaxopt_rules._core._tree import describe_mismatch, leaf_path, leaf_paths


# ---------------------------------------------------------------------------
# 1-4: reading and checking the inputs


def check_state(config: RuleConfig, state_cls: type, state: Any) -> None:
    """Refuses a state that this transform's ``init`` did not make."""
    rule_name = config.definition.name
    # (Every NamedTuple has a .count method, so look at the fields.)
    if "count" not in getattr(state, "_fields", ()):
        raise TypeError(
            f"{rule_name}: expected the state returned by this transform's "
            f"init, got {type(state).__name__}"
        )
    if config.stochastic_rounding and "rounding_key" not in state._fields:
        raise TypeError(
            f"{rule_name}: with stochastic_rounding=True the state carries a "
            f"rounding_key; got {type(state).__name__} without one (a state "
            "from a factory called without stochastic_rounding?)"
        )
    if config.definition.takes_key and "rng_key" not in state._fields:
        raise TypeError(
            f"{rule_name}: this rule draws random numbers and its state carries "
            f"an rng_key; got {type(state).__name__} without one"
        )
    if type(state) is not state_cls and (
        type(state).__name__ != state_cls.__name__
        or tuple(state._fields) != tuple(state_cls._fields)
    ):
        raise TypeError(
            f"{rule_name}: expected a {state_cls.__name__}"
            f"{tuple(state_cls._fields)} (the state returned by this "
            f"transform's init), got a {type(state).__name__}"
            f"{tuple(state._fields)}: a state from another rule, or from "
            "this rule with other hyperparameters?"
        )


def read_gradients(
    definition: RuleDefinition, updates: Any
) -> tuple[list[Any], Any, list[Kind]]:
    """The gradient leaves (numbers as arrays), the tree and each leaf's kind."""
    grads, treedef = jax.tree.flatten(updates)
    grads = [as_leaf(g) for g in grads]
    kinds = [
        leaf_kind(definition.name, definition.complex_params, updates, i, g, "gradient")
        for i, g in enumerate(grads)
    ]
    return grads, treedef, kinds


def read_slots(
    config: RuleConfig,
    state: Any,
    updates: Any,
    grads: Sequence[Any],
    treedef: Any,
    kinds: list[Kind],
    per_leaf: Mapping[str, list[Any]] | None = None,
) -> dict[str, list[Any]]:
    """Each active slot's leaves; a slot of a non-float dtype makes its leaf inert.

    Slot shapes are checked with each leaf's per-leaf hyperparameters.
    """
    definition = config.definition
    rule_name = definition.name
    options = dict(definition.slots)
    slot_leaves: dict[str, list[Any]] = {}
    tree_slots = set(definition.tree_slot_names)
    for slot in config.active_slots:
        if slot in tree_slots:
            continue
        try:
            tree = getattr(state, slot)
        except AttributeError:
            raise TypeError(
                f"{rule_name}: the state has no slot {slot!r}; pass the state "
                f"returned by this transform's init (got {type(state).__name__})"
            ) from None
        if jax.tree.structure(tree) != treedef:
            raise ValueError(
                f"{rule_name}: the gradient tree does not match the state "
                f"(slot {slot!r}): {describe_mismatch(tree, updates)}"
            )
        leaves = [as_leaf(s) for s in treedef.flatten_up_to(tree)]
        for i, (g, s) in enumerate(zip(grads, leaves, strict=True)):
            if not jnp.issubdtype(s.dtype, jnp.inexact):
                kinds[i] = Kind.INERT
            if kinds[i] is Kind.INERT:
                continue
            slot_complex = jnp.issubdtype(s.dtype, jnp.complexfloating)
            if options[slot].square and slot_complex:
                raise TypeError(
                    f"{rule_name}: state slot {slot!r} at "
                    f"{leaf_path(updates, i)} is complex ({s.dtype}), but it "
                    "holds squared magnitudes and must be real (a state "
                    "converted from optax, which stores them complex? use "
                    "jaxopt_rules.from_optax)"
                )
            if kinds[i] is Kind.COMPLEX and not options[slot].square:
                if not slot_complex:
                    raise ValueError(
                        f"{rule_name}: the gradient at {leaf_path(updates, i)} "
                        f"is complex but its state slot {slot!r} is {s.dtype}: "
                        "initialise the state with the complex parameters"
                    )
            expected = slot_shape(
                options[slot], g.shape, leaf_arguments(config, per_leaf, i)
            )
            if tuple(s.shape) != expected:
                raise ValueError(
                    f"{rule_name}: gradient at {leaf_path(updates, i)} has shape "
                    f"{g.shape} but its state slot {slot!r} has shape "
                    f"{tuple(s.shape)} (expected {expected})"
                )
        slot_leaves[slot] = leaves
    return slot_leaves


def read_tree_slots(config: RuleConfig, state: Any) -> dict[str, jax.Array]:
    """Each active per-tree slot's scalar, checked."""
    definition = config.definition
    values: dict[str, jax.Array] = {}
    for slot in definition.tree_slot_names:
        if slot not in config.active_slots:
            continue
        value = as_leaf(getattr(state, slot))
        if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(
                f"{definition.name}: state slot {slot!r} is one real scalar for "
                f"the whole tree, got {value.dtype} of shape {tuple(value.shape)}"
            )
        values[slot] = value
    return values


def read_params(
    definition: RuleDefinition,
    params: Any,
    updates: Any,
    grads: Sequence[Any],
    treedef: Any,
    kinds: list[Kind],
) -> list[Any]:
    """The parameter leaves when the rule reads them (else ``[]``).

    Checked whenever given (a stateless rule has no other tree to compare the
    gradients with); an integer parameter makes its leaf inert.
    """
    rule_name = definition.name
    if params is None:
        return []
    if jax.tree.structure(params) != treedef:
        raise ValueError(
            f"{rule_name}: the gradient tree does not match the parameter "
            f"tree: {describe_mismatch(params, updates)}"
        )
    leaves = [as_leaf(p) for p in treedef.flatten_up_to(params)]
    for i, (g, p) in enumerate(zip(grads, leaves, strict=True)):
        kind = leaf_kind(
            rule_name, definition.complex_params, params, i, p, "parameter"
        )
        if kind is Kind.INERT:
            kinds[i] = Kind.INERT
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(
                f"{rule_name}: gradient at {leaf_path(updates, i)} has shape "
                f"{g.shape} but the parameter has shape {tuple(p.shape)}"
            )
    return leaves if definition.needs_params else []


def read_extra_args(
    definition: RuleDefinition,
    extra_args: Mapping[str, Any],
    updates: Any,
    treedef: Any,
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The extra arguments of ``update`` the rule declared: shared, or per leaf.

    An argument whose tree has the gradients' structure is handed to the rule
    leaf by leaf (a Hessian estimate); any other value (the loss ``value``)
    is shared by every leaf.
    """
    shared: dict[str, Any] = {}
    per_leaf: dict[str, list[Any]] = {}
    for name in definition.extra_args:
        if name not in extra_args:
            raise TypeError(
                f"{definition.name}: this rule needs {name!r}: pass it to update, "
                f"tx.update(grads, state, params, {name}=...) (with optax.chain "
                "every transform receives it)"
            )
        value = extra_args[name]
        if jax.tree.structure(value) == treedef and treedef.num_leaves != 1:
            per_leaf[name] = [as_leaf(v) for v in treedef.flatten_up_to(value)]
        elif len(jax.tree.leaves(value)) == 1 and not isinstance(
            value, dict | list | tuple
        ):
            shared[name] = as_leaf(value)
        elif jax.tree.structure(value) == treedef:
            per_leaf[name] = [as_leaf(v) for v in treedef.flatten_up_to(value)]
        else:
            raise ValueError(
                f"{definition.name}: the extra argument {name!r} must be one array "
                "(shared by every leaf) or a tree shaped like the gradients; "
                f"{describe_mismatch(value, updates)}"
            )
    return shared, per_leaf


def draw_keys(
    definition: RuleDefinition, state: Any, kinds: Sequence[Kind]
) -> tuple[jax.Array | None, list[Any] | None]:
    """The state's next raw key and each leaf's typed key for this update.

    Keys are split over the leaves that run the rule, in leaf order (inert
    leaves get ``None``), so integer leaves added to a tree do not change
    the other leaves' numbers. ``None, None`` for rules that draw none.
    """
    if not definition.takes_key:
        return None, None
    raw = jnp.asarray(state.rng_key)
    if not jnp.issubdtype(raw.dtype, jnp.integer):
        raise TypeError(
            f"{definition.name}: the state's rng_key must be raw uint32 key data, "
            f"got {raw.dtype} (a state converted from optax? use "
            "jaxopt_rules.from_optax)"
        )
    # (A wrapper blending states, c * new + (1 - c) * old, may widen it.)
    raw = raw.astype(jnp.uint32)
    split = definition.key_split or split_then_per_leaf
    running = [i for i, kind in enumerate(kinds) if kind is not Kind.INERT]
    next_key, keys = split(jax.random.wrap_key_data(raw), len(running))
    leaf_keys: list[Any] = [None] * len(kinds)
    for k, i in enumerate(running):
        leaf_keys[i] = keys[k]
    return jax.random.key_data(next_key), leaf_keys


# ---------------------------------------------------------------------------
# 5-7: hyperparameter values, leaf inputs, global statistics


@dataclasses.dataclass
class Scalars:
    """Hyperparameter values at one step, cast once per compute dtype.

    ``shared(dtype)`` holds every input all leaves of a compute dtype share
    (the same objects), so the runner evaluates the work that depends only on
    them once per update.
    """

    definition: RuleDefinition
    values: Mapping[str, Any]
    step: jax.Array
    totals: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tree_slots: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    leaf_keys: Any = None
    """For rules that take ``key``: one typed key per leaf for this update."""
    _cast: dict[np.dtype, dict[str, Any]] = dataclasses.field(default_factory=dict)
    _shared: dict[np.dtype, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def cast(self, dtype: np.dtype) -> dict[str, Any]:
        """Hyperparameters, ``step`` and per-tree slots in ``dtype``'s real type.

        An absent per-tree slot is ``None``.
        """
        dtype = real_dtype(dtype)  # hyperparameters are real
        if dtype not in self._cast:
            cast = {k: cast_value(v, dtype) for k, v in self.values.items()}
            cast["step"] = self.step.astype(dtype)
            for name in self.definition.tree_slot_names:
                value = self.tree_slots.get(name)
                cast[name] = None if value is None else value.astype(dtype)
            self._cast[dtype] = cast
        return self._cast[dtype]

    def shared(self, dtype: np.dtype) -> dict[str, Any]:
        """The rule's inputs common to all leaves of compute dtype ``dtype``."""
        if dtype not in self._shared:
            definition = self.definition
            scalars = self.cast(dtype)
            shared = {
                k: scalars[k]
                for k in definition.hyperparam_names
                if k not in definition.per_leaf
            }
            if "step" in definition.reserved:
                shared["step"] = scalars["step"]
            if "stats" in definition.reserved:
                real = real_dtype(dtype)
                shared["stats"] = {
                    k: jnp.real(v).astype(real) for k, v in self.totals.items()
                }
            shared.update(self.extra)
            shared.update({k: scalars[k] for k in definition.tree_slot_names})
            self._shared[dtype] = shared
        return self._shared[dtype]


def leaf_inputs(
    config: RuleConfig,
    grads: Sequence[Any],
    kinds: Sequence[Kind],
    slot_leaves: Mapping[str, list[Any]],
    param_leaves: Sequence[Any],
) -> tuple[list[np.dtype], list[dict[str, Any]]]:
    """Each leaf's compute dtype and its arrays (grad, slots, param) in it.

    Square slots of complex leaves are read in the real dtype.
    """
    definition = config.definition
    options = dict(definition.slots)
    dtypes = [
        compute_dtype(g.dtype) if kind is not Kind.INERT else np.dtype(np.float32)
        for g, kind in zip(grads, kinds, strict=True)
    ]
    inputs: list[dict[str, Any]] = []
    for i, (g, dtype) in enumerate(zip(grads, dtypes, strict=True)):
        if kinds[i] is Kind.INERT:
            inputs.append({})
            continue
        real = real_dtype(dtype)
        leaf: dict[str, Any] = {
            slot: slot_leaves[slot][i].astype(real if options[slot].square else dtype)
            if slot in config.active_slots
            else None
            for slot in definition.leaf_slot_names
        }
        leaf["grad"] = g.astype(dtype)
        if param_leaves:
            leaf["param"] = param_leaves[i].astype(dtype)
        inputs.append(leaf)
    return dtypes, inputs


def global_totals(
    definition: RuleDefinition,
    scalars: Scalars,
    inputs: Sequence[Mapping[str, Any]],
    dtypes: Sequence[np.dtype],
    kinds: Sequence[Kind],
    per_leaf: Mapping[str, Sequence[Any]],
) -> dict[str, Any]:
    """The rule's ``global_stats`` of every leaf, summed key by key.

    Per-leaf hyperparameters (a weight-decay ``mask``) reach it leaf by leaf.
    """
    totals: dict[str, Any] = {}
    if definition.global_stats is None:
        return totals
    for i, (leaf, dtype, kind) in enumerate(zip(inputs, dtypes, kinds, strict=True)):
        if kind is Kind.INERT:
            continue
        cast = scalars.cast(dtype)  # (step and the per-tree slots too)
        leaf_stats = definition.global_stats(
            leaf["grad"],
            **{k: cast[k] if k in cast else leaf[k] for k in definition.stats_inputs},
            **{
                k: per_leaf[k][i] if k in per_leaf else cast[k]
                for k in definition.stats_hyperparams
            },
        )
        for key, value in leaf_stats.items():
            totals[key] = totals[key] + value if key in totals else value
    return totals


# ---------------------------------------------------------------------------
# 8-9: running the rule, checking and repacking its outputs


def _rounding_key(
    rule: str, tree: Any, index: int, storage: np.dtype | None, key: jax.Array
) -> jax.Array | None:
    """The stochastic-rounding key of one slot of one leaf, or None."""
    if storage is None:
        return None
    if storage != jnp.bfloat16:
        raise ValueError(
            f"{rule}: stochastic_rounding stores to bfloat16, but a slot of "
            f"{leaf_path(tree, index)} is stored in {storage}; pass a bfloat16 or "
            "32-bit dtype for it"
        )
    return key


def check_output(
    config: RuleConfig,
    out: Any,
    g: Any,
    old_slots: Mapping[str, Any],
    updates: Any,
    i: int,
    shared: Sequence[bool] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """One leaf's ``(update, *slots)``, checked; returns them in their dtypes.

    ``shared`` says, per returned value, whether every leaf computes it alike
    (see :attr:`LeafRunner.last_shared`): a per-tree slot must be.
    """
    definition = config.definition
    rule_name = definition.name
    options = dict(definition.slots)
    n_slots = len(definition.slots)
    if out is None:
        raise TypeError(
            f"{rule_name}: the rule function returned None; it must return "
            + (
                f"(update, {', '.join(definition.slot_names)})"
                if n_slots
                else "the update"
            )
        )
    if n_slots == 0:
        out = (out,)
    elif not isinstance(out, tuple) or len(out) != 1 + n_slots:
        raise TypeError(
            f"{rule_name}: the rule function must return (update, "
            f"{', '.join(definition.slot_names)}), got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    update = jnp.asarray(out[0])
    if update.shape != g.shape:
        raise ValueError(
            f"{rule_name}: the update for {leaf_path(updates, i)} has shape "
            f"{update.shape}, expected the gradient's shape {g.shape}"
        )
    if jnp.iscomplexobj(update) and not jnp.iscomplexobj(g):
        raise TypeError(
            f"{rule_name}: the update for the real gradient at "
            f"{leaf_path(updates, i)} is complex ({update.dtype})"
        )
    new_slots: dict[str, Any] = {}
    for slot, value in zip(definition.slot_names, out[1:], strict=True):
        if slot not in config.active_slots:
            if value is not None:
                raise TypeError(
                    f"{rule_name}: slot {slot!r} is absent with these "
                    "hyperparameters, so the rule function must return "
                    "None for it"
                )
            continue
        old = old_slots[slot]
        value = jnp.asarray(value)
        if options[slot].per_tree:
            k = definition.slot_names.index(slot) + 1
            if value.shape != () or jnp.iscomplexobj(value):
                raise ValueError(
                    f"{rule_name}: the per-tree slot {slot!r} must stay one real "
                    f"scalar; the rule returned {value.dtype} of shape "
                    f"{value.shape} for {leaf_path(updates, i)}"
                )
            if shared is not None and len(shared) == len(out) and not shared[k]:
                raise ValueError(
                    f"{rule_name}: the per-tree slot {slot!r} is one value for "
                    f"the whole tree, but the rule computes its new value from "
                    f"{leaf_path(updates, i)}'s own arrays; compute it from "
                    "values every leaf shares (stats, step, hyperparameters, "
                    "per-tree slots), with sums over the leaves from global_stats"
                )
            new_slots[slot] = value
            continue
        if jnp.iscomplexobj(value) and not jnp.iscomplexobj(old):
            raise TypeError(
                f"{rule_name}: the rule returned a complex value for slot "
                f"{slot!r} at {leaf_path(updates, i)}, which is stored "
                f"real ({old.dtype})"
                + (
                    "; it holds squared magnitudes: compute them with "
                    "jaxopt_rules.abs_sq(grad), not grad**2"
                    if options[slot].square
                    else ""
                )
            )
        if value.shape != old.shape:
            raise ValueError(
                f"{rule_name}: new slot {slot!r} for {leaf_path(updates, i)} "
                f"has shape {value.shape}, expected {old.shape}"
            )
        new_slots[slot] = value.astype(old.dtype)
    return update.astype(g.dtype), new_slots


def run_leaves(
    config: RuleConfig,
    state: Any,
    updates: Any,
    grads: Sequence[Any],
    kinds: Sequence[Kind],
    dtypes: Sequence[np.dtype],
    inputs: Sequence[Mapping[str, Any]],
    slot_leaves: Mapping[str, list[Any]],
    per_leaf: Mapping[str, list[Any]],
    scalars: Scalars,
) -> tuple[list[Any], dict[str, list[Any]], dict[str, Any]]:
    """The rule on every leaf: the new updates and slots, leaf by leaf.

    Inert leaves get a zero update (``float0`` gradients pass through) and
    keep their slots. Values the rule reports are re-reported per leaf, named
    ``<name><leaf path>``. Per-tree slots are computed alike by every leaf;
    the value kept is that of the first leaf of the widest compute dtype
    (the old value when no leaf runs the rule).
    """
    definition = config.definition
    rule_name = definition.name
    tree_slots = set(definition.tree_slot_names)
    active = tuple(s for s in config.active_slots if s not in tree_slots)
    active_tree = tuple(s for s in config.active_slots if s in tree_slots)
    new_tree: dict[str, Any] = dict(scalars.tree_slots)
    tree_bits = -1
    # Traced once per leaf signature; slots stored narrower than the compute
    # dtype are read as stored (see _interpreter.py).
    run_rule = LeafRunner(definition.fn)
    keys = None
    if config.stochastic_rounding:
        keys = slot_keys(
            state.rounding_key, state.count, len(grads), len(definition.slots)
        )
    leaf_keys = None
    if definition.takes_key:
        leaf_keys = scalars.leaf_keys
    paths: list[str] | None = None
    new_updates: list[Any] = []
    new_slots: dict[str, list[Any]] = {slot: [] for slot in active}
    for i, (g, dtype, leaf) in enumerate(zip(grads, dtypes, inputs, strict=True)):
        if kinds[i] is Kind.INERT:
            new_updates.append(g if g.dtype == jax.dtypes.float0 else jnp.zeros_like(g))
            for slot in active:
                new_slots[slot].append(slot_leaves[slot][i])
            continue
        own = {slot: leaf[slot] for slot in definition.leaf_slot_names}
        if "param" in definition.reserved:
            own["param"] = leaf["param"]
        if leaf_keys is not None:
            own["key"] = leaf_keys[i]
        for name, leaf_values in per_leaf.items():
            own[name] = leaf_values[i]
        storage = [
            narrower(slot_leaves[slot][i].dtype, dtype) if slot in active else None
            for slot in definition.slot_names
        ]  # (per-tree slots: None, kept in the compute dtype until repacked)
        rounding = None
        if keys is not None:
            rounding = [
                _rounding_key(rule_name, updates, i, stored, keys[i, k])
                for k, stored in enumerate(storage)
            ]
        out, reports = run_rule(
            leaf["grad"], own, scalars.shared(dtype), storage, rounding
        )
        if reports:
            # Named once per update (not one tree walk per leaf).
            if paths is None:
                paths = leaf_paths(updates)
            for name, value in reports:
                report(f"{name}{paths[i]}", value)
        old = {slot: slot_leaves[slot][i] for slot in active}
        old.update({slot: scalars.tree_slots[slot] for slot in active_tree})
        update, slots = check_output(
            config, out, g, old, updates, i, run_rule.last_shared
        )
        new_updates.append(update)
        for slot in active:
            new_slots[slot].append(slots[slot])
        bits = jnp.finfo(real_dtype(dtype)).bits
        if active_tree and bits > tree_bits:
            tree_bits = bits
            new_tree.update({slot: slots[slot] for slot in active_tree})
    return new_updates, new_slots, new_tree


def repack(
    config: RuleConfig,
    state_cls: type,
    state: Any,
    treedef: Any,
    count: jax.Array,
    new_updates: Sequence[Any],
    new_slots: Mapping[str, Sequence[Any]],
    new_tree: Mapping[str, Any],
    next_key: jax.Array | None = None,
) -> tuple[Any, Any]:
    """The update tree and the new state.

    The rounding key is carried over, the random key advanced to ``next_key``.
    """
    extra_fields = {}
    if config.definition.takes_key:
        extra_fields["rng_key"] = next_key
    if config.stochastic_rounding:
        extra_fields["rounding_key"] = state.rounding_key
    new_state = state_cls(
        count,
        **{
            slot: new_tree[slot].astype(getattr(state, slot).dtype)
            if slot in new_tree
            else treedef.unflatten(new_slots[slot])
            for slot in config.active_slots
        },
        **extra_fields,
    )
    return treedef.unflatten(new_updates), new_state


def make_update(config: RuleConfig, state_cls: type) -> Callable[..., Any]:
    """The ``update`` function of the transform for ``config`` (phases above)."""
    definition = config.definition

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        if definition.needs_params and params is None and jax.tree.leaves(updates):
            raise ValueError(
                f"{definition.name}: this rule reads the parameters, so they must "
                "be passed to update: tx.update(grads, state, params)"
            )
        check_state(config, state_cls, state)
        grads, treedef, kinds = read_gradients(definition, updates)
        per_leaf = per_leaf_values(config, updates, treedef, len(grads))
        slot_leaves = read_slots(
            config, state, updates, grads, treedef, kinds, per_leaf
        )
        tree_slots = read_tree_slots(config, state)
        param_leaves = read_params(definition, params, updates, grads, treedef, kinds)
        shared_extra, per_leaf_extra = read_extra_args(
            definition, extra_args, updates, treedef
        )

        count_inc = safe_increment(state.count)
        next_key, leaf_keys = draw_keys(definition, state, kinds)
        per_leaf.update(per_leaf_extra)
        scalars = Scalars(
            definition,
            config.values_at(state.count),
            count_inc,
            extra=shared_extra,
            tree_slots=tree_slots,
            leaf_keys=leaf_keys,
        )
        dtypes, inputs = leaf_inputs(config, grads, kinds, slot_leaves, param_leaves)
        scalars.totals = global_totals(
            definition, scalars, inputs, dtypes, kinds, per_leaf
        )
        new_updates, new_slots, new_tree = run_leaves(
            config,
            state,
            updates,
            grads,
            kinds,
            dtypes,
            inputs,
            slot_leaves,
            per_leaf,
            scalars,
        )
        return repack(
            config,
            state_cls,
            state,
            treedef,
            count_inc,
            new_updates,
            new_slots,
            new_tree,
            next_key,
        )

    return update_fn
