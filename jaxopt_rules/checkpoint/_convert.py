"""Converting optimizer states between layouts (optax chains ⇄ rule states) by name."""

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.core import Tracer

from jaxopt_rules.quantized import is_quantized


COUNT = "count"
"""The field holding the number of updates taken, in optax's states and ours."""

COUNT_NAMES = frozenset({COUNT, "t"})
"""Names of step counts: ``count``, and ``t`` in optax's Adan. A field of one
of these names is a count when it is an integer scalar."""


def _is_count(name: str, value: Any) -> bool:
    if name not in COUNT_NAMES:
        return False
    return tuple(jnp.shape(value)) == () and jnp.issubdtype(
        jnp.result_type(value), jnp.integer
    )


FROM_COUNT: dict[str, Callable[[Any], Any]] = {
    "is_initial_step": lambda count: jnp.asarray(count) == 0,
    "is_init_step": lambda count: jnp.asarray(count) == 0,
    "count_m2": lambda count: jnp.asarray(count, jnp.int32),
    "step_count": lambda count: jnp.asarray(count, jnp.int32) + 1,
}
"""Fields of optax's states that are functions of the step count, which this
package's states keep instead (optax's optimistic rules: ``is_initial_step``;
``optax.contrib.dog``: ``is_init_step``; ``optax.contrib.ademamix``:
``count_m2``, a second count of the same steps; ``optax.contrib.schedule_free``:
``step_count``, one more than the count).
Written from the count when the target has them; checked against the count
when only the source has them."""

FROM_INIT = frozenset({"rounding_key", "b1", "ns_coeffs"})
"""Fields fixed at ``init`` that one layout keeps and the other does not:
taken from the target's ``init`` when the source lacks them, dropped when the
target lacks them (this package's stochastic-rounding key, seeded by
``rounding_seed``; the copy of the hyperparameter ``b1`` in the state of
``optax.contrib.schedule_free``; the Newton-Schulz coefficients in the state
of ``optax.contrib.muon``)."""


@dataclasses.dataclass(frozen=True)
class _Field:
    """A named field of a state, where it was found and its value."""

    path: str
    value: Any


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _is_container(node: Any) -> bool:
    """Whether ``node`` is state structure (not a slot's tree of arrays).

    NamedTuples are state; tuples and lists are state when every element is
    (an ``optax.chain``'s tuple of states), and so are dicts whose values all
    are NamedTuples (``optax.partition``'s states per label). Other dicts and
    everything else are values (a slot shaped like the parameters, a dict of
    hyperparameters).
    """
    if _is_namedtuple(node):
        return True
    if isinstance(node, tuple | list):
        return all(_is_container(x) for x in node)
    if isinstance(node, dict):
        return bool(node) and all(_is_namedtuple(x) for x in node.values())
    return False


def _has_leaves(value: Any) -> bool:
    return bool(jax.tree.leaves(value))


def _fields(state: Any) -> dict[str, list[_Field]]:
    """Every named field of ``state`` holding arrays, by name.

    NamedTuples are entered field by field and chains element by element;
    a field whose value is not state structure is recorded under its name
    (``mu``, ``count``, ``hyperparams``). Fields holding no arrays
    (``EmptyState``, ``None``, an empty dict) are left out.
    """
    found: dict[str, list[_Field]] = {}

    def walk(node: Any, path: str) -> None:
        if _is_namedtuple(node):
            for name in node._fields:
                value = getattr(node, name)
                if _is_container(value):
                    walk(value, f"{path}.{name}")
                elif _has_leaves(value):
                    found.setdefault(name, []).append(_Field(f"{path}.{name}", value))
        elif isinstance(node, tuple | list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}[{key!r}]")

    if not _is_container(state):
        hint = (
            " (a checkpoint restored without a target? rebuild it first with "
            "restore_state(raw, jax.eval_shape(<its optimizer>.init, params)))"
            if isinstance(state, dict | list)
            else ""
        )
        raise TypeError(
            f"expected an optimizer state (a NamedTuple or a tuple of them), "
            f"got {type(state).__name__}{hint}"
        )
    walk(state, "state")
    return found


def _is_tracer(x: Any) -> bool:
    return isinstance(x, Tracer)


def _cast(value: Any, like: Any, where: str) -> jax.Array:
    """``value`` in the dtype of the template leaf ``like``, shapes checked.

    Complex to real (optax stores ``|g|**2`` of a complex parameter in a
    complex array with a zero imaginary part; this package in the matching
    real dtype) keeps the real part and refuses a non-zero imaginary part.

    A PRNG key goes between optax's typed keys and the raw ``uint32`` key data
    this package's states keep (``rng_key``).
    """
    if is_quantized(value):
        value = value.dequantize()
    value = jnp.asarray(value)
    value_is_key = jnp.issubdtype(value.dtype, jax.dtypes.prng_key)
    like_is_key = jnp.issubdtype(like.dtype, jax.dtypes.prng_key)
    if value_is_key and not like_is_key:
        value = jax.random.key_data(value)
    elif like_is_key and not value_is_key:
        if value.dtype != np.uint32:
            raise ValueError(
                f"{where}: a {np.dtype(value.dtype)} array in the source, a PRNG "
                "key in the target (raw key data is uint32)"
            )
        value = jax.random.wrap_key_data(value)  # (JAX's default PRNG, as optax)
    placeholder = _placeholder(value, like, where)
    if placeholder is not None:
        return placeholder
    if value.shape != tuple(like.shape):
        raise ValueError(
            f"{where}: shape {value.shape} in the source, {tuple(like.shape)} in "
            "the target (were both states built for the same parameters?)"
        )
    if jnp.iscomplexobj(value) and not jnp.issubdtype(like.dtype, jnp.complexfloating):
        if not _is_tracer(value) and bool(jnp.any(jnp.imag(value) != 0)):
            raise ValueError(
                f"{where}: complex values with a non-zero imaginary part cannot "
                f"go into the target's {np.dtype(like.dtype)} slot"
            )
        value = jnp.real(value)
    return value if like_is_key else value.astype(like.dtype)


def _placeholder(
    value: Any, like: Any, where: str, dtype: Any = None
) -> jax.Array | None:
    """An empty array for a one-element placeholder, or back; else None.

    optax keeps a ``(0, 0)`` projector for a leaf GaLore does not project;
    ``jr.galore`` keeps one zero there (orbax cannot save zero-size arrays).
    Neither holds information, so either becomes the other; a placeholder
    that is not zero is refused.
    """
    dtype = like.dtype if dtype is None else dtype
    size = int(np.prod(like.shape, dtype=np.int64))
    if tuple(value.shape) == tuple(like.shape) or value.ndim != len(like.shape):
        return None
    if value.size == 0 and size == 1:
        return jnp.zeros(like.shape, dtype)
    if value.size == 1 and size == 0:
        if not _is_tracer(value) and bool(jnp.any(jnp.asarray(value) != 0)):
            raise ValueError(
                f"{where}: a placeholder holding {jnp.ravel(value)[0]} in the "
                "source has no place in the target's empty array"
            )
        return jnp.zeros(like.shape, dtype)
    return None


def _is_hole(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def merge_masked(values: Sequence[Any], like: Any) -> Any | None:
    """One tree shaped like ``like`` from trees that each hold part of it.

    ``optax.partition`` keeps a state per label, each a tree of the
    parameters with ``MaskedNode`` holes where the other labels' leaves are
    (``optax.contrib.muon``'s two ``mu``: Muon's and AdamW's). Where exactly
    one of ``values`` holds an array it is taken; where none does, the leaf
    is zeros shaped like ``like``'s (a placeholder of a slot the other layout
    does not have, which starts and stays at zero).
    ``None`` when ``values`` have no holes, do not fit ``like``'s structure,
    or overlap.
    """
    treedef = jax.tree.structure(like)
    parts = []
    for value in values:
        try:
            pieces = treedef.flatten_up_to(value)
        except (ValueError, TypeError):
            return None
        if not all(_is_hole(x) or hasattr(x, "shape") for x in pieces):
            return None
        parts.append(pieces)
    if not any(_is_hole(x) for pieces in parts for x in pieces):
        return None
    out = []
    for i, leaf in enumerate(jax.tree.leaves(like)):
        held = [pieces[i] for pieces in parts if not _is_hole(pieces[i])]
        if len(held) > 1:
            return None
        out.append(held[0] if held else jnp.zeros(leaf.shape, leaf.dtype))
    return treedef.unflatten(out)


def restrict_masked(value: Any, like: Any) -> Any | None:
    """``value`` (whole) cut to the leaves of a tree with ``MaskedNode`` holes.

    ``like`` is a state of ``optax.partition``'s; ``None`` when it has no
    holes or ``value`` does not fit.
    """
    like_leaves, treedef = jax.tree.flatten(like, is_leaf=_is_hole)
    if not any(_is_hole(x) for x in like_leaves):
        return None
    try:
        pieces = treedef.flatten_up_to(value)
    except (ValueError, TypeError):
        return None
    return treedef.unflatten(
        [
            optax.MaskedNode() if _is_hole(t) else v
            for v, t in zip(pieces, like_leaves, strict=True)
        ]
    )


def is_array_list(node: Any) -> bool:
    """A list of arrays in place of one array (optax's per-axis SM3 state)."""
    return (
        isinstance(node, list | tuple)
        and not _is_namedtuple(node)
        and all(hasattr(x, "shape") and hasattr(x, "dtype") for x in node)
    )


def per_leaf(tree: Any, prefix: Any) -> list[Any] | None:
    """``tree`` cut at the leaves of ``prefix`` (one array per leaf), or None.

    Each piece is an array or a list of arrays; ``None`` when ``tree`` does not
    extend ``prefix``'s structure that way.
    """
    try:
        pieces = jax.tree.structure(prefix).flatten_up_to(tree)
    except (ValueError, TypeError):
        return None
    if all(hasattr(x, "shape") or is_array_list(x) for x in pieces):
        return pieces
    return None


def _join(src: Any, target: Any) -> Any:
    parts = [jnp.ravel(jnp.asarray(x)) for x in src]
    if not parts:
        return jnp.zeros(target.shape, target.dtype)
    joined = jnp.concatenate(parts)
    if joined.size != int(np.prod(target.shape)):
        return None
    return joined.reshape(target.shape)


def _split(src: Any, target: Any, where: str) -> Any:
    flat = jnp.ravel(jnp.asarray(src))
    sizes = [int(np.prod(t.shape)) for t in target]
    if not sizes:
        if not _is_tracer(flat) and bool(jnp.any(flat != 0)):
            raise ValueError(
                f"{where}: {flat.size} non-zero number(s) that the target keeps "
                "no array for (optax's SM3 keeps no accumulator for a parameter "
                "with no axes)"
            )
        return type(target)()
    if sum(sizes) != flat.size:
        return None
    ends = np.cumsum(sizes)[:-1].tolist()
    return type(target)(
        piece.reshape(t.shape)
        for piece, t in zip(jnp.split(flat, ends), target, strict=True)
    )


def relayout(value: Any, like: Any, where: str = "state") -> Any | None:
    """``value`` in ``like``'s layout where one keeps a list of arrays per leaf.

    optax's SM3 keeps each parameter's accumulators as a list, one vector per
    axis; ``jr.sm3`` keeps them end to end in one vector. Where the two trees
    agree down to the parameters' leaves and differ only so, each list is
    joined (ravelled, concatenated, reshaped to the target leaf) or each
    array split (by the sizes of the target list's arrays). A parameter with
    no axes has an empty list in optax (whose SM3 cannot update it, so its
    accumulator is still the initial zero) and one number here: an empty list
    becomes zeros; a non-zero number cannot go into an empty list. In trees
    of the same structure, an empty array and a one-element placeholder
    (optax's and ``jr.galore``'s projector of a leaf not projected) become
    each other.

    Returns:
        The relaid tree (values in the source's dtypes), or ``None`` when the
        trees do not correspond this way.
    """
    if jax.tree.structure(value) == jax.tree.structure(like):
        # Only one-element placeholders for empty arrays, or back (GaLore).
        leaves, treedef = jax.tree.flatten(value)
        swapped = [
            _placeholder(v, t, where, dtype=v.dtype)
            if hasattr(v, "shape") and hasattr(t, "shape")
            else None
            for v, t in zip(leaves, jax.tree.leaves(like), strict=True)
        ]
        if all(x is None for x in swapped):
            return None
        return treedef.unflatten(
            [v if x is None else x for v, x in zip(leaves, swapped, strict=True)]
        )
    pieces = per_leaf(value, like)  # lists in the source: join them
    if pieces is not None:
        out = [
            _join(src, t) if is_array_list(src) else src
            for src, t in zip(pieces, jax.tree.leaves(like), strict=True)
        ]
        shape_of = like
    else:
        targets = per_leaf(like, value)  # lists in the target: split into them
        if targets is None:
            return None
        out = [
            _split(src, t, where) if is_array_list(t) else src
            for src, t in zip(jax.tree.leaves(value), targets, strict=True)
        ]
        shape_of = value
    if any(x is None for x in out):
        return None
    return jax.tree.structure(shape_of).unflatten(out)


def _fill_value(source: _Field, like: Any, where: str) -> Any:
    """The source field's tree cast leaf by leaf onto the template's tree."""
    src_value = source.value
    restricted = restrict_masked(src_value, like)
    if restricted is not None:
        src_value = restricted
    src_def = jax.tree.structure(src_value, is_leaf=is_quantized)
    like_def = jax.tree.structure(like)
    if src_def != like_def and not any(
        map(is_quantized, jax.tree.leaves(src_value, is_leaf=is_quantized))
    ):
        relaid = relayout(src_value, like, where)
        if relaid is not None:
            src_value = relaid
            src_def = jax.tree.structure(src_value)
    if src_def != like_def:
        raise ValueError(
            f"{where}: the source's {source.path} has tree structure {src_def}, "
            f"the target's {like_def} (were both states built for the same "
            "parameters and options?)"
        )
    paths = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(like)
    ]
    return jax.tree.unflatten(
        like_def,
        [
            _cast(v, t, f"{where}{p}")
            for v, t, p in zip(
                jax.tree.leaves(src_value, is_leaf=is_quantized),
                jax.tree.leaves(like),
                paths,
                strict=True,
            )
        ],
    )


def _resolve_count(
    found: dict[str, list[_Field]], count: Any | None, direction: str
) -> Any | None:
    """The step count to write: ``count`` if given, else the source's one."""
    sources = [
        f
        for name in sorted(COUNT_NAMES)
        for f in found.get(name, [])
        if _is_count(name, f.value)
    ]
    concrete = [f for f in sources if not _is_tracer(f.value)]
    values = {int(np.asarray(f.value)) for f in concrete}
    if len(values) > 1:
        raise ValueError(
            f"{direction}: the source state holds different step counts: "
            + ", ".join(f"{f.path}={int(np.asarray(f.value))}" for f in concrete)
        )
    if count is not None:
        if values and not _is_tracer(count) and int(np.asarray(count)) not in values:
            raise ValueError(
                f"{direction}: count={int(np.asarray(count))} differs from the "
                f"source's step count {values.pop()}"
            )
        return count
    return sources[0].value if sources else None


def convert(
    source: Any,
    target_init: Callable[[Any], Any],
    params: Any,
    *,
    direction: str,
    rename: Mapping[str, str],
    count: Any | None,
    ignore: Collection[str],
) -> Any:
    """Fills ``target_init(params)``'s fields by name from ``source``'s.

    ``rename`` maps a target field name to the source's name for it.
    """
    found = _fields(source)
    template = jax.eval_shape(target_init, params)
    step = _resolve_count(found, count, direction)
    used: set[str] = {*FROM_INIT, *ignore}
    used.update(
        n for n in COUNT_NAMES if all(_is_count(n, f.value) for f in found.get(n, []))
    )
    from_init: list[str] = []

    def fill(like: Any, path: str) -> Any:
        if _is_namedtuple(like):
            values = {}
            for name in like._fields:
                value = getattr(like, name)
                values[name] = fill_field(name, value, f"{path}.{name}")
            return type(like)(**values)
        if isinstance(like, tuple | list):
            return type(like)(fill(x, f"{path}[{i}]") for i, x in enumerate(like))
        if isinstance(like, dict):
            return {k: fill(x, f"{path}[{k!r}]") for k, x in like.items()}
        return like

    def fill_field(name: str, like: Any, path: str) -> Any:
        if _is_container(like):
            return fill(like, path)
        if not _has_leaves(like):
            return like
        if any(map(is_quantized, jax.tree.leaves(like, is_leaf=is_quantized))):
            raise ValueError(
                f"{direction}: the target's {path} is quantized (quantized_state); "
                "convert into the unwrapped rule's state instead: this function "
                "does not quantize"
            )
        if _is_count(name, like):
            if step is None:
                raise ValueError(
                    f"{direction}: the target's {path} is a step count and the "
                    "source state holds none (optax's states keep no count when "
                    "nothing depends on it, e.g. optax.sgd without momentum); "
                    "pass count=<updates taken>"
                )
            return _cast(step, like, f"{direction}: {path}")
        source_name = rename.get(name, name)
        candidates = found.get(source_name, [])
        if name in FROM_COUNT and not candidates:
            if step is None:
                raise ValueError(
                    f"{direction}: the target's {path} follows from the step "
                    "count, which the source state does not hold; pass "
                    "count=<updates taken>"
                )
            return _cast(FROM_COUNT[name](step), like, f"{direction}: {path}")
        if not candidates:
            if name in FROM_INIT:
                from_init.append(path)
                return like
            available = sorted(n for n in found if n not in COUNT_NAMES)
            raise ValueError(
                f"{direction}: the source state has no field {source_name!r} for "
                f"the target's {path} (its fields: {', '.join(available) or 'none'}); "
                "were both built with the same options? (rename= maps names "
                "that differ)"
            )
        merged = merge_masked([c.value for c in candidates], like)
        if merged is not None:
            candidates = [_Field(" + ".join(c.path for c in candidates), merged)]
        if len(candidates) > 1:
            raise ValueError(
                f"{direction}: the source state has several fields named "
                f"{source_name!r} ({', '.join(c.path for c in candidates)}), so "
                f"the target's {path} is ambiguous"
            )
        used.add(source_name)
        return _fill_value(candidates[0], like, f"{direction}: {path}")

    result = fill(template, "state")
    for name, derive in FROM_COUNT.items():
        if name in used or name not in found:
            continue
        for field in found[name]:
            if step is None:
                raise ValueError(
                    f"{direction}: the source's {field.path} needs the step "
                    "count to be kept; pass count=<updates taken>"
                )
            if not _is_tracer(field.value) and not _is_tracer(step):
                if np.asarray(field.value) != np.asarray(derive(step)):
                    raise ValueError(
                        f"{direction}: the source's {field.path} is "
                        f"{np.asarray(field.value)}, which contradicts the "
                        f"step count {int(np.asarray(step))}"
                    )
        used.add(name)
    unused = sorted(
        f"{c.path}" for name, fs in found.items() if name not in used for c in fs
    )
    if unused:
        raise ValueError(
            f"{direction}: the target state has no field for the source's "
            f"{', '.join(unused)} (were both built with the same options? pass "
            "ignore=(<name>, ...) to drop a field knowingly)"
        )
    if from_init:
        concrete = target_init(params)
        # The same structure as the template: read those leaves from it.
        result = _take_from(result, concrete, set(from_init))
    return result


def _take_from(result: Any, concrete: Any, paths: set[str]) -> Any:
    """``result`` with the fields at ``paths`` replaced by ``concrete``'s."""

    def walk(node: Any, other: Any, path: str) -> Any:
        if path in paths:
            return other
        if _is_namedtuple(node):
            return type(node)(
                **{
                    n: walk(getattr(node, n), getattr(other, n), f"{path}.{n}")
                    for n in node._fields
                }
            )
        if isinstance(node, tuple | list) and _is_container(node):
            return type(node)(
                walk(x, y, f"{path}[{i}]")
                for i, (x, y) in enumerate(zip(node, other, strict=True))
            )
        if isinstance(node, dict) and _is_container(node):
            return {k: walk(x, other[k], f"{path}[{k!r}]") for k, x in node.items()}
        return node

    return walk(result, concrete, "state")
