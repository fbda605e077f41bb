"""What a step record holds: leaf paths as keys, and the packed vector's layout.

A record is a flat dict. A per-leaf value's key is the statistic's name, then
``/``, then the leaf's path with its parts joined by ``/``: dict keys as they
are, sequence indices as numbers, attribute names (NamedTuples, dataclasses)
as names. ``{"l1": {"w": ...}}`` gives ``grad_norm/l1/w``; ``{"enc": [a, b]}``
gives ``grad_norm/enc/1`` for ``b``. TensorBoard groups tags on ``/``, so the
per-leaf values of one statistic appear together. ``nonfinite`` lists leaf
paths in the same form.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey, keystr


SEPARATOR = "/"
"""Joins a statistic's name and the parts of a leaf's path in record keys."""


def _part(entry: Any) -> str:
    if isinstance(entry, DictKey):
        return str(entry.key)
    if isinstance(entry, SequenceKey):
        return str(entry.idx)
    if isinstance(entry, GetAttrKey):
        return entry.name
    if isinstance(entry, FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_name(path: Sequence[Any]) -> str:
    """A leaf's path as record keys spell it: ``('l1', 'w')`` -> ``"l1/w"``.

    Args:
        path: a key path from ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The parts joined by ``/``; ``""`` for a tree that is a single leaf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxopt_rules.logging import path_name
        >>> tree = {"enc": [jnp.ones(2), jnp.ones(3)]}
        >>> [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
        ['enc/0', 'enc/1']
    """
    return SEPARATOR.join(_part(entry) for entry in path)


def keyed(name: str, path: str) -> str:
    """The record key of statistic ``name`` at leaf ``path`` (``name`` at the root)."""
    return f"{name}{SEPARATOR}{path}" if path else name


def leaf_names(paths: Sequence[Sequence[Any]], *, unique: bool) -> tuple[str, ...]:
    """The record names of leaves at ``paths``; with ``unique``, refuses clashes.

    Raises:
        ValueError: ``unique`` and two leaves have the same name (a dict key
            holding ``/``, e.g. ``{"a/b": x, "a": {"b": y}}``): their per-leaf
            values would share one key.
    """
    names = tuple(path_name(path) for path in paths)
    if unique and len(set(names)) < len(names):
        seen: dict[str, Sequence[Any]] = {}
        for path, name in zip(paths, names, strict=True):
            if name in seen:
                raise ValueError(
                    f"log_step: the leaves {keystr(tuple(seen[name]))} and "
                    f"{keystr(tuple(path))} would both be recorded as {name!r} "
                    f"(record keys join a leaf's path with {SEPARATOR!r}); rename "
                    "one of the keys, or log without per_leaf"
                )
            seen[name] = path
    return names


def report_namer(paths: Sequence[Sequence[Any]]) -> dict[str, str]:
    """Maps the path suffix a rule's per-leaf report carries to the record path.

    The rule core names a value that a rule reports per leaf
    ``name + keystr(path)`` (``trust_ratio['l1']['w']``; ``<root>`` for a
    single-leaf tree). Records name it ``trust_ratio/l1/w``.
    """
    names = {keystr(tuple(path)): path_name(path) for path in paths if path}
    if any(not path for path in paths):
        names["<root>"] = ""
    return names


def record_report_name(name: str, suffixes: dict[str, str]) -> str:
    """``name`` with a trailing ``keystr`` leaf path rewritten as ``/``-parts.

    The longest trailing path that is a leaf of the logged tree is taken;
    a name that ends with none is kept as it is.
    """
    for start, char in enumerate(name):
        if start and char in "[.<" and name[start:] in suffixes:
            return keyed(name[:start], suffixes[name[start:]])
    return name


class Layout(NamedTuple):
    """What each entry of the packed statistics vector means (static).

    The vector holds one value per name in ``names``, then, with
    ``nonfinite``, one count per leaf, then, with ``per_leaf_norms``, one
    gradient norm per leaf.
    """

    names: tuple[str, ...]
    leaf_names: tuple[str, ...]
    nonfinite: bool
    per_leaf_norms: bool


def make_record(layout: Layout, step: int, values: np.ndarray) -> dict[str, Any]:
    """The record of one step from its packed float64 vector."""
    record: dict[str, Any] = {"step": step}
    n = len(layout.names)
    for name, value in zip(layout.names, values[:n], strict=True):
        if name == "applied":
            record[name] = bool(value)
        elif name == "micro_steps":
            record[name] = int(value)
        else:
            record[name] = float(value)
    offset = n
    leaves = len(layout.leaf_names)
    if layout.nonfinite:
        counts = values[offset : offset + leaves]
        record["nonfinite"] = [
            name for name, c in zip(layout.leaf_names, counts, strict=True) if c > 0
        ]
        offset += leaves
    if layout.per_leaf_norms:
        norms = values[offset : offset + leaves]
        for name, value in zip(layout.leaf_names, norms, strict=True):
            record[keyed("grad_norm", name)] = float(value)
    return record


def leaves_and_paths(tree: Any, is_leaf: Any) -> tuple[list[Any], list[Any]]:
    """The leaves of ``tree`` that are not holes, and their key paths."""
    pairs = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    kept = [(path, leaf) for path, leaf in pairs if not is_leaf(leaf)]
    return [leaf for _, leaf in kept], [path for path, _ in kept]
