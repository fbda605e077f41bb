"""``quantized_state``: any optax transform with its large state in 8 or 4 bits."""

import dataclasses
import math
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from jaxopt_rules._core import safe_increment
from jaxopt_rules.quantized import _flax
from jaxopt_rules.quantized._blocks import QuantizedArray, is_quantized, quantize
from jaxopt_rules.quantized._maps import QuantMap


_flax.install()

_QUANTIZED_UPDATES: "weakref.WeakSet[Callable[..., Any]]" = weakref.WeakSet()
"""The update functions :func:`quantized_state` made (to refuse wrapping twice)."""


class QuantizedState(NamedTuple):
    """State of :func:`quantized_state`.

    Attributes:
        count: updates taken (int32, saturating): varies the stochastic
            rounding from step to step.
        inner: the wrapped transform's state, with its large floating leaves
            replaced by :class:`QuantizedArray` nodes.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner: Any


NON_NEGATIVE_SLOTS = frozenset(
    {
        # this package and optax
        "nu",
        "sum_of_squares",
        "max_nu",
        # optax.contrib.cocob: gradient bound, sum of |gradients|, reward
        "scale",
        "subgradients",
        "reward",
        # torch.optim names (jaxopt_rules.torch_compat)
        "exp_avg_sq",
        "max_exp_avg_sq",
        "square_avg",
        "sum",
        "acc_delta",
        "exp_inf",
        "step_size",
        "row_var",
        "col_var",
        "variance",
    }
)
"""State fields holding non-negative quantities (second moments, accumulators)."""

SIGNED_SLOTS = frozenset(
    {"mu", "trace", "exp_avg", "momentum_buffer", "grad_avg", "ax", "prev"}
)
"""State fields known to change sign; they stop the search for a field name."""

FULL_PRECISION_SLOTS = frozenset(
    {
        "init_particles",  # optax.contrib.cocob: the initial parameters
        "x0",  # optax.contrib.madgrad: the initial parameters
        "init_params",  # optax.contrib.dog, dowg: the initial parameters
        "params0",  # optax.contrib.prodigy: the initial parameters
        "z",  # optax.contrib.schedule_free: the parameters are read from it
        "factors",  # soap, shampoo: Kronecker factors; psgd_kron: its Q factors
        "eigenbases",  # soap: orthonormal bases the gradient is rotated by
        "roots",  # shampoo: the factors' inverse roots
    }
)
"""State fields that stay in full precision: copies of the parameters (a rule
that steps from them, ``theta_0 + ...``, would move the parameters by their
quantization error every step), and SOAP's and Shampoo's Kronecker factors,
eigenbases and inverse roots (an eigenbasis is orthonormal only to its own
precision; the references keep them in full precision)."""

KeyPath = tuple[Any, ...]


def _field_names(path: KeyPath) -> list[str]:
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            names.append(key.name)
    return names


def default_non_negative(path: KeyPath, leaf: Any) -> bool:
    """Whether a state leaf holds a non-negative quantity, from its field name.

    The first NamedTuple field (attribute) on the leaf's path that is a known
    slot name decides: one of :data:`NON_NEGATIVE_SLOTS` (``nu``,
    ``exp_avg_sq``, ...) says yes; one of :data:`SIGNED_SLOTS` or none says no.
    Dictionary keys (parameter names) are never read.
    """
    del leaf
    for name in _field_names(path):
        if name in NON_NEGATIVE_SLOTS:
            return True
        if name in SIGNED_SLOTS:
            return False
    return False


def default_full_precision(path: KeyPath, leaf: Any) -> bool:
    """Whether a state leaf is a copy of the parameters, from its field name.

    Any NamedTuple field (attribute) on the leaf's path that is one of
    :data:`FULL_PRECISION_SLOTS` says yes. Dictionary keys are never read.
    """
    del leaf
    return any(name in FULL_PRECISION_SLOTS for name in _field_names(path))


def _predicate(
    choice: Callable[[KeyPath, Any], bool] | Collection[str] | None,
    default: Callable[[KeyPath, Any], bool],
) -> Callable[[KeyPath, Any], bool]:
    if choice is None:
        return default
    if callable(choice):
        return choice
    if isinstance(choice, str):
        raise TypeError(
            f"quantized_state: expected a collection of field names or a "
            f"predicate, got the string {choice!r}; pass [{choice!r}]"
        )
    names = frozenset(choice)

    def by_name(path: KeyPath, leaf: Any) -> bool:
        del leaf
        return any(name in names for name in _field_names(path))

    return by_name


def quantized_state(
    inner: optax.GradientTransformation,
    bits: int = 8,
    block_size: int | None = None,
    min_size: int = 4096,
    *,
    non_negative: Callable[[KeyPath, Any], bool] | Collection[str] | None = None,
    full_precision: Callable[[KeyPath, Any], bool] | Collection[str] | None = None,
    stochastic_rounding: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Stores ``inner``'s large floating state leaves block-wise quantized.

    Works with any optax transform: the rules of this package, optax's, chains.
    Each floating or complex state leaf with at least ``min_size`` elements
    (and at least one dimension) is kept as a :class:`QuantizedArray`: per block of
    ``block_size`` elements, its absmax in float32 and one ``bits``-bit code
    per element. Every update dequantizes those leaves, runs ``inner.update``
    in the leaves' own dtype, and quantizes the new state, all in one jitted
    step, so XLA fuses the conversions into the update's arithmetic. Smaller
    leaves, integer leaves (``count``) and scalars are kept as they are.

    Maps: a signed dynamic map for quantities that change sign (first
    moments, momentum), an unsigned one for non-negative quantities (second
    moments, accumulators): at 8 bits a zero-free unsigned dynamic map, at 4
    bits the zero-free linear map of Li et al. (see
    :mod:`jaxopt_rules.quantized._maps`).

    Update::

        s      = dequantize(q)                    (absmax_b * map[code])
        u, s'  = inner.update(g, s, params)
        q'     = quantize(s')                     (per block b of s':
                                                   absmax_b = max |s'_b|,
                                                   code = nearest map value of
                                                   s'_b / absmax_b)

    Bytes per quantized element: ``bits / 8 + 4 / block_size``: 1.016 at 8
    bits with blocks of 256 (Adam: 2.03 per parameter, against 8 in float32),
    0.531 at 4 bits with blocks of 128 (Adam: 1.06).

    Complex leaves: a complex leaf is stored as its real and imaginary parts
    (twice the codes of a real leaf of its size, signed map). A complex leaf
    of a non-negative slot holds a real quantity (optax keeps ``|g|^2`` in
    complex arrays): its real part alone is stored, with the unsigned map,
    and its imaginary part reads as zero.

    Non-finite values: a NaN or infinite element of a new state leaf poisons
    its own block: the block's scale is NaN, so the whole block (up to
    ``block_size`` elements around it) reads as NaN and the next update is NaN
    there, for ``optax.apply_if_finite`` or ``log_step`` to see. It is found
    as +inf in the absmax reduction (XLA's ``max`` can drop NaN, never inf).

    Sharding: on a mesh, each quantized leaf's blocks (padded with zero
    blocks to a multiple of the device count ``N``) are sharded over every
    device of the mesh, whatever the param's own sharding (ZeRO-style): each
    device holds about ``1/N`` of the state (measured per device by
    ``benchmarks/sharded_state.py``); the numbers are those of one device.
    With explicit axes (``jax.set_mesh``) this happens whether ``init`` is
    jitted or not; with automatic axes, ``init`` must see the
    params' shardings: call it outside ``jax.jit`` (or on
    ``ShapeDtypeStruct`` leaves carrying their shardings); a jitted ``init``
    on automatic axes keeps one flat run of blocks, placed by XLA. The
    padding depends on ``N``: restore a checkpoint into a state made by
    ``tx.init`` (or ``jax.eval_shape``) on the same number of devices.

    Frameworks: a framework that turns each :class:`QuantizedArray` into a
    plain ``{"codes", "scales"}`` mapping (flax NNX's ``nnx.Optimizer`` does)
    still works: ``update`` rebuilds them from the layout ``init`` makes for
    ``params`` (or for the gradients when ``params`` is not given). Flax
    serialization (``flax.serialization.to_bytes`` / ``from_bytes``, linen
    ``TrainState`` checkpoints) knows :class:`QuantizedArray` as soon as
    flax is imported, before or after this package.

    Args:
        inner: the transform whose state to store quantized (not itself a
            ``quantized_state``: wrapping twice is refused).
        bits: the integer 8 or 4.
        block_size: elements per block (default: 256 at 8 bits, 128 at 4
            bits, the block sizes of Dettmers et al. and of Li et al.).
        min_size: leaves with fewer elements stay in full precision (biases,
            norms: their bytes are negligible and their values often matter
            most).
        non_negative: which state leaves hold non-negative quantities and get
            the unsigned map: a collection of NamedTuple field names, or a
            predicate ``f(key_path, leaf)``. Default:
            :func:`default_non_negative` (``nu``, ``exp_avg_sq``,
            ``sum_of_squares``, ... by field name). A negative value in such a
            leaf is stored as the smallest positive map value.
        full_precision: which state leaves stay in full precision whatever
            their size: a collection of NamedTuple field names, or a predicate
            ``f(key_path, leaf)``. Default: :func:`default_full_precision`
            (copies of the initial parameters: COCOB's ``init_particles``,
            MADGRAD's ``x0``, by field name).
        stochastic_rounding: round each element to one of its two neighbouring
            map values at random, unbiased, instead of to the nearest. An
            exponential average changes by a fraction ``1 - beta`` of the gap
            to the gradient per step, often less than half a map step (1/64
            of the absmax at 8 bits): rounded to nearest, such an element never
            moves. Stochastic rounding keeps the average right on average
            (its effect on final losses: ``benchmarks/quantized_state.py``,
            tables in ``benchmarks/README.md``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`QuantizedState`: a step count and ``inner``'s state with the
        large leaves replaced by :class:`QuantizedArray` pytrees (plain uint8
        and float32 arrays: it jits, vmaps, shards and checkpoints).

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.quantized_state(jr.adam(1e-3), bits=8)
        >>> params = {"w": jnp.zeros((512, 512)), "b": jnp.zeros((512,))}
        >>> state = tx.init(params)
        >>> jr.tree_bytes(state) / 512**2  # about 2 bytes per parameter
        2.046905517578125
        >>> updates, state = tx.update({"w": jnp.ones((512, 512)),
        ...                             "b": jnp.ones((512,))}, state)

    References:
        Dettmers, Lewis, Shleifer and Zettlemoyer, "8-bit Optimizers via
        Block-wise Quantization", ICLR 2022.
        Li, Chen and Zhu, "Memory Efficient Optimizers with 4-bit States",
        NeurIPS 2023.
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise TypeError(
            f"quantized_state: bits must be the integer 8 or 4, got {bits!r} "
            f"({type(bits).__name__})"
        )
    if bits not in (4, 8):
        raise ValueError(f"quantized_state: bits must be 8 or 4, got {bits!r}")
    bits = int(bits)
    if block_size is None:
        block_size = 256 if bits == 8 else 128
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or block_size < 2
        or block_size % 2
    ):
        raise ValueError(
            f"quantized_state: block_size must be an even integer >= 2, got "
            f"{block_size!r}"
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(
            f"quantized_state: min_size must be an integer >= 0, got {min_size!r}"
        )
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        raise TypeError(
            "quantized_state: inner must be an optax GradientTransformation, got "
            f"{type(inner).__name__}"
        )
    if getattr(inner, "update", None) in _QUANTIZED_UPDATES:
        raise ValueError(
            "quantized_state: inner is already a quantized_state transform "
            "(quantized_state applied twice); wrap the plain transform once, "
            "e.g. quantized_state(adam(1e-3), bits=4)"
        )
    signed_map = QuantMap("signed", bits)
    unsigned_map = QuantMap("unsigned" if bits == 8 else "linear", bits)
    choose = _predicate(non_negative, default_non_negative)
    keep = _predicate(full_precision, default_full_precision)
    tx = optax.with_extra_args_support(inner)

    def eligible(leaf: Any) -> bool:
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        return (
            shape is not None
            and dtype is not None
            and len(shape) >= 1
            and (
                jnp.issubdtype(dtype, jnp.floating)
                or jnp.issubdtype(dtype, jnp.complexfloating)
            )
            and math.prod(shape) >= max(min_size, 1)
        )

    def store(path: KeyPath, leaf: Any) -> Any:
        if not eligible(leaf) or keep(path, leaf):
            return leaf
        qmap = unsigned_map if choose(path, leaf) else signed_map
        if isinstance(leaf, jax.ShapeDtypeStruct):  # abstract params
            sharding = getattr(leaf, "sharding", None)
            spec = sharding.spec if isinstance(sharding, NamedSharding) else None
            return jax.eval_shape(
                lambda x: quantize(x, qmap, block_size, spec=spec), leaf
            )
        return quantize(leaf, qmap, block_size)

    def init_fn(params: optax.Params) -> QuantizedState:
        _flax.register_with_flax()
        plain = tx.init(params)
        nested = [
            jax.tree_util.keystr(path)
            for path, leaf in jax.tree_util.tree_flatten_with_path(
                plain, is_leaf=is_quantized
            )[0]
            if is_quantized(leaf)
        ]
        if nested:
            raise ValueError(
                "quantized_state: the inner transform's state already holds "
                f"quantized leaves (at {nested[0]}): quantized_state is applied "
                "twice (perhaps inside a chain); wrap each plain transform once"
            )
        inner_state = jax.tree_util.tree_map_with_path(store, plain)
        return QuantizedState(jnp.zeros([], jnp.int32), inner_state)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, QuantizedState]:
        if not isinstance(state, QuantizedState):
            raise TypeError(
                "quantized_state: expected the QuantizedState returned by this "
                f"transform's init, got {type(state).__name__}"
            )
        if _has_plain(state.inner):
            # A framework (flax NNX, ...) turned each QuantizedArray into a
            # {"codes", "scales"} mapping: rebuild them from init's layout.
            template = jax.eval_shape(
                init_fn, updates if params is None else params
            ).inner
            state = state._replace(inner=_rebuild(state.inner, template))
        inner_state = jax.tree.map(
            lambda x: x.dequantize() if is_quantized(x) else x,
            state.inner,
            is_leaf=is_quantized,
        )
        new_updates, new_state = tx.update(updates, inner_state, params, **extra_args)
        treedef = jax.tree.structure(state.inner, is_leaf=is_quantized)
        old = treedef.flatten_up_to(state.inner)
        try:
            new = treedef.flatten_up_to(new_state)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "quantized_state: the inner transform returned a state whose "
                f"structure differs from its init's: {error}"
            ) from None
        # One rounding key per leaf and step (a hash, see _blocks.dither).
        step_key = state.count.astype(jnp.uint32) * np.uint32(0x9E3779B9)
        stored = [
            _requantize(n, o, step_key + np.uint32(i) if stochastic_rounding else None)
            if isinstance(o, QuantizedArray)
            else n
            for i, (o, n) in enumerate(zip(old, new, strict=True))
        ]
        return new_updates, QuantizedState(
            safe_increment(state.count), treedef.unflatten(stored)
        )

    _QUANTIZED_UPDATES.add(update_fn)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_plain(x: Any) -> bool:
    """Whether ``x`` is a QuantizedArray turned into a plain mapping."""
    return isinstance(x, Mapping) and set(x.keys()) == {"codes", "scales"}


def _has_plain(tree: Any) -> bool:
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: is_quantized(x) or _is_plain(x))
    return any(_is_plain(x) for x in leaves)


def _path_names(path: KeyPath) -> tuple[str, ...]:
    """A key path as names, whatever container kinds it went through."""
    names = []
    for key in path:
        for attribute in ("name", "key", "idx"):
            if hasattr(key, attribute):
                names.append(str(getattr(key, attribute)))
                break
        else:
            names.append(str(key))
    return tuple(names)


def _rebuild(inner: Any, template: Any) -> Any:
    """``inner`` with each plain ``{"codes", "scales"}`` a QuantizedArray again.

    The shape, dtype, map and layout come from ``template`` (the abstract
    state of ``init``), matched by key path.
    """
    expected = {
        _path_names(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            template, is_leaf=is_quantized
        )[0]
        if is_quantized(leaf)
    }

    def restore(path: KeyPath, x: Any) -> Any:
        if not _is_plain(x):
            return x
        target = expected.get(_path_names(path))
        where = jax.tree_util.keystr(path)
        if target is None:
            raise ValueError(
                f"quantized_state: the state leaf at {where} is a plain mapping "
                "of codes and scales, but init stores no quantized array there: "
                "the state was not made by this transform for these params"
            )
        codes, scales = x["codes"], x["scales"]
        for name, got, want in (
            ("codes", codes, target.codes),
            ("scales", scales, target.scales),
        ):
            if tuple(jnp.shape(got)) != tuple(want.shape):
                raise ValueError(
                    f"quantized_state: {name} at {where} has shape "
                    f"{tuple(jnp.shape(got))}, init makes {tuple(want.shape)}"
                )
        return dataclasses.replace(target, codes=codes, scales=scales)

    return jax.tree_util.tree_map_with_path(
        restore, inner, is_leaf=lambda x: is_quantized(x) or _is_plain(x)
    )


def _requantize(new: Any, old: QuantizedArray, key: jax.Array | None) -> QuantizedArray:
    """``new`` stored in the format of ``old``."""
    if tuple(jnp.shape(new)) != old.shape:
        raise ValueError(
            f"quantized_state: a state leaf changed shape from {old.shape} to "
            f"{tuple(jnp.shape(new))} in the inner update"
        )
    return quantize(
        jnp.asarray(new).astype(old.dtype),
        old.qmap,
        old.block_size,
        key=key,
        shards=old.shards,
        spec=old.spec,
    )
