"""Running an elementwise transform on one flat buffer per dtype (many-leaf trees)."""

import re
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import keystr

from jaxopt_rules._core import describe_mismatch, is_hole


_T = TypeVar("_T")


class FlatState(NamedTuple):
    """State of :func:`flat_leaves`: the inner state over the flat buffers.

    Attributes:
        inner: the wrapped transform's state, whose trees are dicts from a dtype
            name (``"float32"``) to one flat buffer holding every leaf of that
            dtype, in tree order.
        layout: the leaves given to ``init``, one key per leaf in tree order
            (``"0 ['b'] float32[3]"``: index, path, dtype and shape, or
            ``None`` for a hole) mapping to ``None``. It holds no arrays: it is
            part of the state's tree structure, so it is static under ``jit``
            and survives pickling, ``flax.serialization`` and orbax (which keep
            a dict of ``None``), and ``update`` checks the gradients against it.
    """

    inner: Any
    layout: dict[str, None]


def _as_leaf(leaf: Any) -> Any:
    """Python numbers as arrays (frameworks put them in parameter trees)."""
    if isinstance(leaf, bool | int | float | complex):
        return jnp.asarray(leaf)
    return leaf


def _where(path: Any) -> str:
    """A leaf's path, without the ``.value`` of a flax NNX ``Variable``.

    ``nnx.Optimizer`` calls ``init`` on ``Variable`` nodes and ``update`` on
    the plain arrays they hold; both name the same leaf.
    """
    keys = [
        key
        for key in path
        if not (isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value")
    ]
    return keystr(tuple(keys)) or "<root>"


def _entry(path: Any, leaf: Any) -> str:
    """One leaf of a layout: ``"['w'] float32[2,3]"``, or the hole's type."""
    where = _where(path)
    if is_hole(leaf):
        return f"{where} {'None' if leaf is None else type(leaf).__name__}"
    dims = ",".join(str(d) for d in np.shape(leaf))
    return f"{where} {np.dtype(leaf.dtype).name}[{dims}]"


def _entries(tree: Any) -> tuple[list[str], list[Any]]:
    """The layout entries and the leaves (holes included) of ``tree``."""
    with_paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_hole)[0]
    leaves = [_as_leaf(leaf) for _, leaf in with_paths]
    for (path, _), leaf in zip(with_paths, leaves, strict=True):
        if not is_hole(leaf) and getattr(leaf, "dtype", None) is None:
            raise TypeError(
                f"flat_leaves: the leaf at {_where(path)} is a "
                f"{type(leaf).__name__}, not an array"
            )
    return [
        _entry(path, leaf) for (path, _), leaf in zip(with_paths, leaves, strict=True)
    ], leaves


def _layout(entries: list[str]) -> dict[str, None]:
    """Entries as dict keys whose sorted order is the tree order."""
    width = len(str(max(len(entries) - 1, 0)))
    return {f"{i:0{width}d} {entry}": None for i, entry in enumerate(entries)}


def _recorded(layout: Any) -> list[str]:
    """The entries a :func:`_layout` dict was built from."""
    if not isinstance(layout, dict) or not all(
        isinstance(k, str) and " " in k for k in layout
    ):
        raise TypeError(
            "flat_leaves: the state's layout is not the one this transform's init "
            f"records (got {type(layout).__name__}); pass the FlatState returned "
            "by init"
        )
    return [key.split(" ", 1)[1] for key in sorted(layout)]


def _check_layout(what: str, entries: list[str], recorded: list[str]) -> None:
    """Raises if ``entries`` (the leaves of ``what``) differ from init's."""
    if entries == recorded:
        return
    for i, (got, want) in enumerate(zip(entries, recorded, strict=False)):
        if got != want:
            difference = f"the {what} leaf {got}, where init had {want} (leaf {i})"
            break
    else:
        n, m = len(entries), len(recorded)
        difference = (
            f"the {what} leaf {entries[m]} (leaf {m}), which init did not have"
            if n > m
            else f"no {what} leaf for {recorded[n]} (leaf {n}) given to init"
        )
    raise ValueError(
        f"flat_leaves: the {what} tree is laid out differently from the parameters "
        f"given to init: {difference}. flat_leaves keeps one flat state buffer "
        "per dtype, so the same total size split differently would hand one "
        "leaf's state to another: pass the tree structure, shapes and dtypes "
        "given to init."
    )


def _groups(leaves: list[Any]) -> dict[str, list[int]]:
    """Leaf indices per dtype name, in tree order; holes are skipped."""
    groups: dict[str, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if not is_hole(leaf):
            groups.setdefault(np.dtype(leaf.dtype).name, []).append(i)
    return groups


def _flatten(leaves: list[Any], groups: dict[str, list[int]]) -> dict[str, jax.Array]:
    return {
        name: jnp.concatenate([jnp.ravel(leaves[i]) for i in index])
        for name, index in groups.items()
    }


def _buffer_names(entries: list[str], groups: dict[str, list[int]]) -> dict[str, str]:
    """For each buffer's path as the inner transform sees it, the user's leaves."""
    names = {}
    for name, index in groups.items():
        paths = [entries[i].rsplit(" ", 1)[0] for i in index]
        if len(paths) == 1:
            names[f"['{name}']"] = paths[0]
            continue
        shown = ", ".join(paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        names[f"['{name}']"] = (
            f"{shown}{more} (the {name} leaves, one buffer in flat_leaves)"
        )
    return names


def _naming_user_leaves(names: dict[str, str], call: Callable[[], _T]) -> _T:
    """Runs ``call``; an error naming a flat buffer names the user's leaves.

    The inner transform sees one dict entry per dtype, so its messages name
    ``['float32']``; a ``TypeError`` or ``ValueError`` is raised again with
    each buffer replaced by the leaves it holds, other errors get a note.
    """
    try:
        return call()
    except Exception as error:
        message = str(error)
        found = [token for token in names if token in message]
        if not found:
            raise
        # One pass, so that a replacement is not replaced again.
        pattern = "|".join(re.escape(token) for token in found)
        message = re.sub(pattern, lambda match: names[match.group(0)], message)
        if type(error) in (TypeError, ValueError):
            raise type(error)(message).with_traceback(error.__traceback__) from None
        error.add_note(
            "flat_leaves: the inner transform saw one flat buffer per dtype: "
            + "; ".join(f"{token} holds {names[token]}" for token in found)
        )
        raise


def flat_leaves(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    r"""Runs ``inner`` on one flat buffer per dtype instead of leaf by leaf.

    The gradients (and parameters) of each dtype are concatenated, in tree
    order, into one vector; ``inner`` updates that vector, with its state
    stored flat; the updates are sliced back into the tree. A step then costs a
    few large operations instead of a few per leaf, which pays on accelerators
    with many leaves. On XLA:CPU it is usually slower (the concatenated
    gradient is a fresh parameter-sized temporary every step), so it is meant
    for accelerators. Measured step times: ``benchmarks/leaf_batching.py`` and
    ``benchmarks/step.py --flat`` (tables in ``benchmarks/README.md``).

    When ``inner`` treats every element independently (sgd, adam, adamw,
    rmsprop, adagrad, lion and their optax counterparts) the arithmetic is that
    of ``inner`` applied leaf by leaf: the tests find the same bits for each
    rule's own jitted step, and at most one ulp inside a larger jitted program,
    where XLA may fuse the two layouts differently. The results differ for
    transforms that look at a leaf as a whole (LAMB's per-leaf trust ratio,
    factored second moments, per-leaf masks given as trees; use
    ``optax.masked`` outside this wrapper), for rules that draw random numbers
    (one key per leaf: a buffer draws other numbers, from the same
    distribution) and only by summation order for global norms. The state is
    not sharded like the parameters: use it where the parameters live on one
    device or are replicated.

    ``init`` records the layout of the parameters (tree structure, leaf paths,
    shapes and dtypes) in the state's tree structure, not in arrays;
    ``update`` refuses gradients or parameters laid out otherwise, naming the
    first differing leaf, since a different split of the same total size would
    silently hand one leaf's state to another. Errors of ``inner`` that name a
    buffer (``['float32']``) are raised naming the user's leaves instead.
    Zero-size leaves and empty trees are fine; abstract parameters
    (``jax.ShapeDtypeStruct``) give an abstract state.

    Update::

        g_flat[d] = concat(ravel(g) for leaves g of dtype d, in tree order)
        u_flat, state = inner.update(g_flat, state, p_flat)
        u = u_flat[d][offset(leaf) : offset(leaf) + size(leaf)].reshape(shape)

    Args:
        inner: an optax transform that works elementwise.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`FlatState`.

    Raises:
        ValueError: at ``update``, gradients or parameters whose tree
            structure, leaf shapes or dtypes differ from those given to
            ``init``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.flat_leaves(jr.adam(1e-2))
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(3)}
        >>> state = tx.init(params)
        >>> state.inner.mu["float32"].shape
        (7,)
        >>> list(state.layout)
        ["0 ['b'] float32[3]", "1 ['w'] float32[2,2]"]
        >>> updates, state = tx.update(params, state, params)
        >>> updates["w"].shape
        (2, 2)
    """

    def init_fn(params: optax.Params) -> Any:
        raw = jax.tree.leaves(params, is_leaf=is_hole)
        if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in raw):
            # Abstract parameters give abstract state (as jax.eval_shape does).
            return jax.eval_shape(init_fn, params)
        entries, leaves = _entries(params)
        groups = _groups(leaves)
        inner_state = _naming_user_leaves(
            _buffer_names(entries, groups),
            lambda: inner.init(_flatten(leaves, groups)),
        )
        return FlatState(inner_state, _layout(entries))

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        if not isinstance(state, FlatState):
            raise TypeError(
                "flat_leaves: expected the FlatState returned by this transform's "
                f"init, got {type(state).__name__}"
            )
        recorded = _recorded(state.layout)
        treedef = jax.tree.structure(updates, is_leaf=is_hole)
        entries, leaves = _entries(updates)
        _check_layout("gradient", entries, recorded)
        groups = _groups(leaves)
        flat_params = None
        if params is not None:
            if jax.tree.structure(params, is_leaf=is_hole) != treedef:
                raise ValueError(
                    "flat_leaves: the gradient tree does not match the parameter "
                    f"tree: {describe_mismatch(params, updates)}"
                )
            param_entries, param_leaves = _entries(params)
            _check_layout("parameter", param_entries, recorded)
            flat_params = _flatten(param_leaves, groups)
        flat_updates: dict[str, Any]
        flat_updates, inner_state = _naming_user_leaves(  # pyright: ignore[reportAssignmentType]
            _buffer_names(entries, groups),
            lambda: inner.update(
                _flatten(leaves, groups), state.inner, flat_params, **extra_args
            ),
        )
        out = list(leaves)
        for name, index in groups.items():
            offset = 0
            for i in index:
                size = int(np.prod(leaves[i].shape, dtype=np.int64))
                piece = flat_updates[name][offset : offset + size]
                out[i] = piece.reshape(leaves[i].shape)
                offset += size
        return treedef.unflatten(out), FlatState(inner_state, state.layout)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
