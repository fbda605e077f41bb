"""Rebuilding an optimizer state from a raw checkpoint, matching by name."""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.tree_util import (
    DictKey,
    FlattenedIndexKey,
    GetAttrKey,
    KeyPath,
    SequenceKey,
    keystr,
)


Name = tuple[str, ...]


def _key_name(key: Any) -> str:
    """The name of one step of a key path, as a checkpoint spells it."""
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, DictKey):
        return str(key.key)
    if isinstance(key, SequenceKey):
        return str(key.idx)
    if isinstance(key, FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _spelled(names: Name) -> str:
    return "".join(f"[{n!r}]" for n in names) or "the root"


def _is_raw_container(node: Any) -> bool:
    return isinstance(node, Mapping) or (
        isinstance(node, Sequence) and not isinstance(node, str | bytes)
    )


def _raw_leaves(raw: Any) -> dict[Name, Any]:
    """Every leaf of a restored tree, keyed by the names along its path.

    Mappings are read by key, sequences by index and NamedTuples and other
    pytree nodes by their key paths; ``None`` and empty containers hold
    nothing. Two leaves whose paths read the same (a dict with keys ``1`` and
    ``"1"``) are refused.
    """
    leaves: dict[Name, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(raw)[0]:
        names = tuple(_key_name(k) for k in path)
        if names in leaves:
            raise ValueError(
                f"restore_state: the restored tree has two leaves at "
                f"{_spelled(names)} (keys that differ only in type); rename one"
            )
        leaves[names] = leaf
    return leaves


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], np.dtype]:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(x.shape), np.dtype(x.dtype)
    x = np.asarray(x)
    return x.shape, x.dtype


def _placed(value: Any, like: Any, where: str) -> Any:
    """``value`` checked against the template leaf ``like`` and put where it lives."""
    want_shape, want_dtype = _shape_dtype(like)
    if isinstance(value, bool | int | float | complex):  # a bare Python number
        value = np.asarray(value, want_dtype)
    shape, dtype = _shape_dtype(value)
    if tuple(shape) != want_shape or dtype != want_dtype:
        raise ValueError(
            f"restore_state: the restored leaf at {where} is "
            f"{dtype}{list(shape)}, the template's is {want_dtype}{list(want_shape)}"
        )
    sharding = getattr(like, "sharding", None)
    if sharding is not None and not isinstance(like, Tracer):
        return jax.device_put(value, sharding)
    return jnp.asarray(value)


def restore_state(raw: Any, template: Any) -> Any:
    """Rebuilds a state from a raw restored tree, matching every leaf by name.

    A checkpoint restored without a target (``orbax`` without an abstract
    tree, ``flax.serialization.msgpack_restore``, a JSON or ``numpy`` dump)
    comes back as nested dicts and lists: a NamedTuple state becomes a dict of
    its fields, a chain's tuple a list. ``jax.tree.unflatten(structure,
    jax.tree.leaves(raw))`` looks like the fix but is wrong: ``jax`` flattens
    a dict in sorted key order and a NamedTuple in field order, so every state
    whose fields are not in alphabetical order gets its slots swapped without
    an error (``rmsprop``'s ``nu, mu, trace``; ``torch_compat``'s adadelta,
    adafactor and asgd).

    This function instead walks the template's key paths and reads each leaf
    from ``raw`` by name: NamedTuple fields and dataclass fields (such as a
    :class:`~jaxopt_rules.QuantizedArray`'s ``codes`` and ``scales``) by field
    name, dict entries by key, tuple and list entries by index (a sequence may
    also come back as a dict keyed ``"0"``, ``"1"``, ..., as
    ``flax.serialization.to_state_dict`` writes it). It works for any state:
    rules, optax chains, ``inject_hyperparams`` and ``quantized_state``.

    Every leaf must match its template leaf in shape and dtype; where the
    template's leaf carries a sharding (``jax.eval_shape`` under a mesh, or
    a ``jax.ShapeDtypeStruct`` with ``sharding=``), the value is placed there.

    Args:
        raw: the restored tree (dicts, lists, tuples, NamedTuples, arrays).
        template: a state of the same optimizer, concrete or abstract, e.g.
            ``jax.eval_shape(tx.init, params)``; only its structure, shapes,
            dtypes and shardings are read.

    Returns:
        A state with the template's structure (the same NamedTuple classes)
        and the restored values.

    Raises:
        ValueError: naming the path of every template leaf that ``raw`` lacks,
            of every leaf of ``raw`` that the template does not have, or of a
            leaf whose shape or dtype differs.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.rmsprop(0.1, centered=True)
        >>> params = {"w": jnp.zeros(2)}
        >>> raw = {  # what a restore without a target returns
        ...     "count": jnp.array(3),
        ...     "mu": {"w": jnp.array([1.0, 2.0])},
        ...     "nu": {"w": jnp.array([5.0, 6.0])},
        ... }
        >>> state = jr.restore_state(raw, jax.eval_shape(tx.init, params))
        >>> type(state).__name__
        'RmspropNuMuState'
        >>> state.nu["w"], state.mu["w"]
        (Array([5., 6.], dtype=float32), Array([1., 2.], dtype=float32))
        >>> jr.restore_state({"count": 3}, tx.init(params))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: restore_state: the restored tree has no leaf at ['nu']['w'] ...
    """
    found = _raw_leaves(raw)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names: list[tuple[Name, KeyPath]] = [
        (tuple(_key_name(k) for k in path), path) for path, _ in flat
    ]
    missing = [
        f"{_spelled(n)} (template path {keystr(path)})"
        for n, path in names
        if n not in found
    ]
    if missing:
        raise ValueError(
            "restore_state: the restored tree has no leaf at " + ", ".join(missing)
        )
    expected = {n for n, _ in names}
    unexpected = [_spelled(n) for n in found if n not in expected]
    if unexpected:
        raise ValueError(
            "restore_state: the restored tree has leaves the template does not "
            "have, at " + ", ".join(unexpected) + " (was it saved from another "
            "optimizer or with other options?)"
        )
    values = [
        _placed(found[n], like, keystr(path))
        for (n, path), (_, like) in zip(names, flat, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, values)
