"""Block-wise quantization of one array: absmax per block, one code per element.

Layout. The array is flattened in row-major order and cut into blocks of
``block_size`` elements (the last one padded with zeros). On a mesh of ``N``
devices (the params' mesh: its explicit axes if it has any, else its
automatic ones), zero blocks are appended up to a multiple of ``N`` and the
blocks are sharded over every device of the mesh, whatever the array's own
sharding: each device keeps ``1/N`` of the codes and scales (ZeRO-style),
even for an array replicated over some mesh axes. The numbers stored are
those of one device. Each block is stored as its absmax (float32) and one
code per element from a :class:`QuantMap`; 4-bit codes are packed two to a
byte (the first half of the block in the low nibbles, the second half in the
high ones, so packing is two contiguous slices, not a strided gather).

Non-finite values: a NaN or infinite element poisons its own block (the
block's scale is NaN, so every element decodes as NaN). A NaN enters the
block's absmax reduction as +inf (XLA's ``max`` may drop a NaN, never an
inf).

Complex arrays are stored as their real and imaginary parts, interleaved
(``[re, im]`` per element), in the same blocks; with a non-negative map, a
complex array holds a real quantity (optax keeps ``|g|^2`` in complex arrays)
and only its real part is stored (the imaginary part reads as zero).
"""

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxopt_rules._core import element_bits
from jaxopt_rules.quantized._maps import QuantMap, decode, encode


_TINY = float(np.finfo(np.float32).tiny)
_MAX = float(np.finfo(np.float32).max)
_PARTIAL_KEY = np.uint32(0x5BD1E995)
"""Mixed into the rounding key of an array's partial last block."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """An array stored block-wise quantized: a pytree of two plain arrays.

    Attributes:
        codes: uint8, shape ``(blocks, block_size)`` (8-bit) or
            ``(blocks, block_size // 2)`` (4-bit, two codes per byte).
        scales: float32, shape ``(blocks,)``: each block's absmax (NaN for a
            block holding a non-finite value).
        shape: the logical shape.
        dtype: the logical dtype (what :meth:`dequantize` returns).
        qmap: the quantization map.
        spec: the logical array's ``PartitionSpec`` on its mesh (the
            param's), restored by :meth:`dequantize`; ``None`` off a mesh or
            when unknown.
        shards: the number of devices the blocks are laid out for (the
            block count is padded to a multiple of it with zero blocks).
    """

    codes: jax.Array
    scales: jax.Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    dtype: np.dtype = dataclasses.field(metadata={"static": True})
    qmap: QuantMap = dataclasses.field(metadata={"static": True})
    spec: PartitionSpec | None = dataclasses.field(
        default=None, metadata={"static": True}
    )
    shards: int = dataclasses.field(default=1, metadata={"static": True})

    @property
    def block_size(self) -> int:
        """Elements per block."""
        return self.codes.shape[-1] * (8 // self.qmap.bits)

    @property
    def size(self) -> int:
        """Elements of the logical array."""
        return math.prod(self.shape)

    def dequantize(self) -> jax.Array:
        """The stored values as an array of :attr:`shape` and :attr:`dtype`."""
        values = self._decoded(self.codes, self.scales)
        pairs = _pairs(self.dtype, self.qmap)
        real_shape = (*self.shape, 2) if pairs else self.shape
        spec = self.spec
        if pairs and spec is not None:
            spec = PartitionSpec(*spec, None)
        if self.shards > 1:
            out = _from_grid(values, real_shape, self.shards, spec)
        else:
            size = math.prod(real_shape)
            flat = values.reshape(*values.shape[:-2], -1)[..., :size]
            out = flat.reshape(*flat.shape[:-1], *real_shape)
        if pairs:
            out = jax.lax.complex(out[..., 0], out[..., 1])
        return out.astype(self.dtype)  # (a real part: imaginary part zero)

    def _decoded(self, codes: jax.Array, scales: jax.Array) -> jax.Array:
        return _decode_blocks(codes, scales, self.qmap)


# Encoding and decoding are jitted functions: traced once per grid shape and
# map, then reused as a call (XLA inlines it), where the wrapper used to trace
# them again for every slot of every leaf. A 196-leaf tree's 8-bit Adam step
# traced and lowered in 4.5 s, now 0.7 s; same numbers (test_bit_identical).
@functools.partial(jax.jit, static_argnames=("qmap",))
def _decode_blocks(codes: jax.Array, scales: jax.Array, qmap: QuantMap) -> jax.Array:
    """The float32 values of a ``(blocks, ...)`` grid of codes and its scales."""
    if qmap.bits == 4:
        codes = jnp.concatenate([codes & 0xF, codes >> 4], axis=-1)
    return decode(qmap, codes) * scales[..., None]


def quantize(
    x: jax.Array,
    qmap: QuantMap,
    block_size: int,
    *,
    key: jax.Array | None = None,
    shards: int | None = None,
    spec: PartitionSpec | None = None,
) -> QuantizedArray:
    """Stores ``x`` block-wise quantized with ``qmap``.

    Non-finite values poison their block (its scale is NaN, and so is every
    decoded element); blocks whose absmax is below float32's smallest normal
    number (zeros, denormals) are stored as zeros.

    Args:
        x: a floating or complex array (complex with a non-negative map:
            its real part only, see the module's docstring).
        qmap: the quantization map.
        block_size: elements per block (even for 4-bit maps).
        key: ``None`` to round to the nearest map value; a uint32 scalar to
            round each element up or down to a neighbouring map value at
            random, unbiased (:func:`dither`); a new key gives new decisions.
        shards: the layout's device count (see the module's docstring);
            default: the devices of ``x``'s mesh (1 off a mesh, and on
            automatic axes when ``x``'s spec is unknown: a tracer).
        spec: ``x``'s ``PartitionSpec`` on its mesh, what :meth:`dequantize`
            gives the values back as (default: read from ``x`` when it
            carries it: explicit axes, a concrete array).

    Returns:
        The :class:`QuantizedArray`.
    """
    shape, dtype = tuple(x.shape), np.dtype(x.dtype)
    place = _placement(x)
    if spec is None:
        spec = _known_spec(x, place)
    if place is not None and not place.explicit and spec is not None:
        x = place.put(x, spec)  # the update's layout (see _from_grid)
    if _pairs(dtype, qmap):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        x = jnp.real(x)
    if shards is None:
        # Automatic axes: spread only when the param's spec is known (init
        # outside jit, or on ShapeDtypeStructs carrying their shardings), so
        # that dequantize can hand the update that layout back.
        known = place is not None and (place.explicit or spec is not None)
        shards = place.devices if known and place is not None else 1
    if place is not None and place.devices != shards:
        if place.explicit:
            raise ValueError(
                f"quantized_state: this state was laid out for {shards} "
                f"device(s) but the array is on a mesh of {place.devices}; "
                "initialise the state (or the restore target) with tx.init on "
                "this mesh"
            )
        place = None
    if shards > 1:
        grid = _to_grid(x, shards, block_size, place)
        size = math.prod(x.shape)
        partial = size // block_size if size % block_size else None
        codes, scales = _encode_blocks(grid, qmap, key, partial_row=partial)
        if place is not None:
            codes = place.put(codes, place.spec(2))
            scales = place.put(scales, place.spec(1))
        return QuantizedArray(codes, scales, shape, dtype, qmap, spec, shards)
    flat = jnp.ravel(x).astype(jnp.float32)
    size = flat.size
    blocks = -(-size // block_size)
    full = size // block_size
    if full == blocks:
        codes, scales = _encode_blocks(flat.reshape(blocks, block_size), qmap, key)
        return QuantizedArray(codes, scales, shape, dtype, qmap)
    # The last, partial block padded on its own: padding the whole array made
    # XLA materialise it (2x the step time on a 10M leaf).
    last = jnp.pad(flat[full * block_size :], (0, blocks * block_size - size))
    last_codes, last_scales = _encode_blocks(
        last.reshape(1, block_size),
        qmap,
        None if key is None else key ^ _PARTIAL_KEY,
    )
    if full == 0:
        return QuantizedArray(last_codes, last_scales, shape, dtype, qmap)
    main_codes, main_scales = _encode_blocks(
        flat[: full * block_size].reshape(full, block_size), qmap, key
    )
    codes = jnp.concatenate([main_codes, last_codes])
    scales = jnp.concatenate([main_scales, last_scales])
    return QuantizedArray(codes, scales, shape, dtype, qmap)


@functools.partial(jax.jit, static_argnames=("qmap", "partial_row"))  # see above
def _encode_blocks(
    grid: jax.Array,
    qmap: QuantMap,
    key: jax.Array | None,
    *,
    partial_row: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Codes and scales of a ``(blocks, block_size)`` float32 grid.

    ``partial_row``: the row holding the array's partial last block, rounded
    with the key that :func:`quantize` gives it on one device.
    """
    # A non-finite element poisons its block. XLA:CPU's `max` can return a
    # finite value for a block holding a NaN, so NaN (and inf) enter the
    # reduction as +inf, which `max` cannot lose; one reduction, no `any`.
    magnitude = jnp.abs(grid)
    absmax = jnp.max(jnp.where(magnitude <= _MAX, magnitude, jnp.inf), axis=-1)
    poisoned = absmax > _MAX
    # Zero and denormal blocks are stored as zeros (no 1/absmax overflow).
    usable = (absmax >= _TINY) & ~poisoned
    scales = jnp.where(poisoned, jnp.nan, jnp.where(usable, absmax, 0.0))
    inverse = jnp.where(usable, 1.0 / jnp.where(usable, absmax, 1.0), 0.0)
    normalized = grid * inverse[:, None]
    noise = None if key is None else dither(normalized.shape, key)
    if key is not None and noise is not None and partial_row is not None:
        last = dither((1, grid.shape[-1]), key ^ _PARTIAL_KEY)
        row = jax.lax.broadcasted_iota(jnp.int32, normalized.shape, 0)
        noise = jnp.where(row == partial_row, last, noise)
    codes = encode(qmap, normalized, noise)
    if qmap.bits == 4:
        half = grid.shape[-1] // 2
        codes = codes[:, :half] | (codes[:, half:] << 4)
    return codes, scales


class _Placement(NamedTuple):
    """The mesh axes a quantized array's blocks are sharded over."""

    mesh: Any  # jax.sharding.AbstractMesh
    axes: tuple[str, ...]
    explicit: bool
    devices: int

    def spec(self, ndim: int, *, axis: int = 0) -> PartitionSpec:
        """A spec sharding dimension ``axis`` of ``ndim`` over every axis."""
        entries: list[Any] = [None] * ndim
        entries[axis] = self.axes[0] if len(self.axes) == 1 else self.axes
        return PartitionSpec(*entries)

    def put(self, y: jax.Array, spec: PartitionSpec) -> jax.Array:
        """``y`` sharded as ``spec`` on this mesh."""
        sharding = NamedSharding(self.mesh, spec)
        if self.explicit:
            return jax.sharding.reshard(y, sharding)
        return jax.lax.with_sharding_constraint(y, sharding)

    def reshape(
        self, y: jax.Array, shape: tuple[int, ...], spec: PartitionSpec
    ) -> jax.Array:
        """``y`` reshaped to ``shape``, sharded as ``spec``."""
        if self.explicit:
            return jax.lax.reshape(
                y, shape, out_sharding=NamedSharding(self.mesh, spec)
            )
        return self.put(y.reshape(shape), spec)


def _placement(x: Any) -> _Placement | None:
    """Where ``x``'s mesh lets its blocks go; ``None`` off a mesh."""
    try:
        sharding = jax.typeof(x).sharding
    except TypeError:  # not a JAX value
        return None
    mesh = getattr(sharding, "mesh", None)
    names = getattr(mesh, "axis_names", ())
    if mesh is None or not names:
        return None
    types = dict(zip(names, mesh.axis_types, strict=True))
    explicit = tuple(a for a in names if types[a] == AxisType.Explicit)
    axes = explicit or tuple(a for a in names if types[a] == AxisType.Auto)
    devices = math.prod(mesh.shape[a] for a in axes)
    if devices <= 1:
        return None
    return _Placement(mesh, axes, bool(explicit), devices)


def _known_spec(x: Any, place: _Placement | None) -> PartitionSpec | None:
    """``x``'s spec when its type or value says it, else ``None``.

    Explicit axes: the type. Automatic axes: a concrete array's (or a
    ``ShapeDtypeStruct``'s) ``NamedSharding``; a tracer's is unknown.
    """
    if place is None:
        return None
    if place.explicit:
        spec = jax.typeof(x).sharding.spec
    else:
        try:
            sharding = x.sharding
        except AttributeError:  # a tracer
            return None
        if not isinstance(sharding, NamedSharding):
            return None
        spec = sharding.spec
    return PartitionSpec(*spec, *[None] * (jnp.ndim(x) - len(spec)))


def _pairs(dtype: np.dtype, qmap: QuantMap) -> bool:
    """Whether both parts of a complex array are stored (see :func:`quantize`)."""
    return bool(jnp.issubdtype(dtype, jnp.complexfloating)) and not qmap.non_negative


def _padded_blocks(size: int, shards: int, block_size: int) -> int:
    """Blocks of the ``shards`` layout: whole blocks, a multiple of ``shards``."""
    blocks = -(-size // block_size)
    return -(-blocks // shards) * shards


def _to_grid(
    x: jax.Array, shards: int, block_size: int, place: _Placement | None
) -> jax.Array:
    """``x`` as float32 blocks, zero blocks appended up to a multiple of ``shards``.

    Row ``r`` holds elements ``r * block_size`` to ``(r + 1) * block_size``
    of the flattened array, as on one device: the numbers stored do not
    depend on the mesh.
    """
    size = math.prod(x.shape)
    rows = _padded_blocks(size, shards, block_size)
    grid_shape = (rows, block_size)
    if place is None or not place.explicit:
        # Automatic axes: only the grid is constrained; XLA moves the data.
        flat = jnp.pad(jnp.ravel(x), (0, rows * block_size - size))
        grid = flat.reshape(grid_shape).astype(jnp.float32)
        return grid if place is None else place.put(grid, place.spec(2))
    if rows * block_size == size and x.shape[0] % shards == 0:
        # Each device's leading rows are its run of blocks: no gather.
        x = place.put(x, place.spec(x.ndim))
        return place.reshape(x, grid_shape, place.spec(2)).astype(jnp.float32)
    flat = place.reshape(x, (size,), PartitionSpec(None)).astype(jnp.float32)
    flat = jnp.pad(flat, (0, rows * block_size - size))
    return place.reshape(flat, grid_shape, place.spec(2))


def _from_grid(
    values: jax.Array,
    shape: tuple[int, ...],
    shards: int,
    spec: PartitionSpec | None,
) -> jax.Array:
    """The inverse of :func:`_to_grid`: ``values`` back to ``shape``."""
    place = _placement(values)
    if place is not None and place.devices != shards:
        place = None
    size = math.prod(shape)
    if place is None or not place.explicit:
        out = values.reshape(-1)[:size].reshape(shape)
        if place is not None and spec is not None:
            # Automatic axes: the param's layout, so XLA runs the update
            # (and keeps the params) there, not in the state's.
            out = place.put(out, spec)
        return out
    if values.size == size and shape[0] % shards == 0:
        out = place.reshape(values, shape, place.spec(len(shape)))
    else:
        flat = place.reshape(values, (values.size,), PartitionSpec(None))
        out = place.reshape(flat[:size], shape, PartitionSpec())
    if spec is not None:
        out = place.put(out, spec)
    return out


def dither(shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    """Uniform numbers in [0, 1), one per element, for stochastic rounding.

    A hash of each element's position and a uint32 ``key`` (the wrapper's
    step count and the leaf's number): no random state to carry, the same
    numbers on every device and sharding, new numbers every step.
    """
    bits = element_bits(shape, key)
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def quantized_bytes(shape: tuple[int, ...], bits: int, block_size: int) -> int:
    """Bytes :func:`quantize` stores for an array of ``shape`` on one device."""
    blocks = -(-math.prod(shape) // block_size)
    return blocks * (block_size * bits // 8 + 4)


def is_quantized(x: Any) -> bool:
    """Whether ``x`` is a :class:`QuantizedArray` (an ``is_leaf`` for tree maps)."""
    return isinstance(x, QuantizedArray)
