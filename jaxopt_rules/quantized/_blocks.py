"""Block-wise quantization of one array: absmax per block, one code per element.

Layout. On one device the array is flattened in row-major order and cut into
blocks of ``block_size`` elements (the last one padded with zeros). On a mesh
of ``N`` devices (the params' mesh, its explicit axes if it has any, else its
automatic ones) the flat array is cut into ``N`` equal chunks, each padded to
whole blocks on its own, and the blocks are sharded over every device of the
mesh, whatever the array's own sharding: each device keeps ``1/N`` of the
codes and scales (ZeRO-style), even for an array replicated over some mesh
axes. Each block is stored as its absmax (float32) and one code per element
from a :class:`QuantMap`; 4-bit codes are packed two to a byte (the first
half of the block in the low nibbles, the second half in the high ones, so
packing is two contiguous slices, not a strided gather).

Non-finite values: a NaN or infinite element poisons its own block (the
block's scale is NaN, so every element decodes as NaN), found with an ``any``
reduction, never with ``max`` (XLA's ``max`` may drop a NaN).

Complex arrays are stored as their real and imaginary parts, interleaved
(``[re, im]`` per element), in the same blocks; with a non-negative map, a
complex array holds a real quantity (optax keeps ``|g|^2`` in complex arrays)
and only its real part is stored (the imaginary part reads as zero).
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxopt_rules._core._rounding import element_bits
from jaxopt_rules.quantized._maps import QuantMap, decode, encode


_TINY = float(np.finfo(np.float32).tiny)


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
        spec: the logical array's ``PartitionSpec`` under a mesh with
            explicit axes, restored by :meth:`dequantize`; ``None``
            otherwise.
        shards: the number of devices the blocks are laid out for (1: one
            flat run of blocks; ``N``: ``N`` chunks of whole blocks, see the
            module's docstring).
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
            out = _from_chunks(values, real_shape, self.shards, spec)
        else:
            size = math.prod(real_shape)
            flat = values.reshape(*values.shape[:-2], -1)[..., :size]
            out = flat.reshape(*flat.shape[:-1], *real_shape)
        if pairs:
            out = jax.lax.complex(out[..., 0], out[..., 1])
        return out.astype(self.dtype)  # (a real part: imaginary part zero)

    def _decoded(self, codes: jax.Array, scales: jax.Array) -> jax.Array:
        if self.qmap.bits == 4:
            codes = jnp.concatenate([codes & 0xF, codes >> 4], axis=-1)
        return decode(self.qmap, codes) * scales[..., None]


def quantize(
    x: jax.Array,
    qmap: QuantMap,
    block_size: int,
    *,
    key: jax.Array | None = None,
    shards: int | None = None,
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
            default: the devices of ``x``'s mesh (1 off a mesh).

    Returns:
        The :class:`QuantizedArray`.
    """
    shape, dtype = tuple(x.shape), np.dtype(x.dtype)
    place = _placement(x)
    spec = _explicit_spec(x, place)
    if _pairs(dtype, qmap):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        x = jnp.real(x)
    if shards is None:
        shards = place.devices if place is not None else 1
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
        grid = _to_chunks(x, shards, block_size, place)
        codes, scales = _encode_blocks(grid, qmap, key)
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
        None if key is None else key ^ np.uint32(0x5BD1E995),
    )
    if full == 0:
        return QuantizedArray(last_codes, last_scales, shape, dtype, qmap)
    main_codes, main_scales = _encode_blocks(
        flat[: full * block_size].reshape(full, block_size), qmap, key
    )
    codes = jnp.concatenate([main_codes, last_codes])
    scales = jnp.concatenate([main_scales, last_scales])
    return QuantizedArray(codes, scales, shape, dtype, qmap)


def _encode_blocks(
    grid: jax.Array, qmap: QuantMap, key: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Codes and scales of a ``(blocks, block_size)`` float32 grid."""
    absmax = jnp.max(jnp.abs(grid), axis=-1)
    # A non-finite element poisons its block. Found with `any`: XLA:CPU's
    # `max` can return a finite value for a block holding a NaN.
    poisoned = jnp.any(~jnp.isfinite(grid), axis=-1)
    # Zero and denormal blocks are stored as zeros (no 1/absmax overflow).
    usable = (absmax >= _TINY) & ~poisoned
    scales = jnp.where(poisoned, jnp.nan, jnp.where(usable, absmax, 0.0))
    inverse = jnp.where(usable, 1.0 / jnp.where(usable, absmax, 1.0), 0.0)
    normalized = grid * inverse[:, None]
    noise = None if key is None else dither(normalized.shape, key)
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


def _explicit_spec(x: Any, place: _Placement | None) -> PartitionSpec | None:
    """``x``'s spec when it is sharded over explicit mesh axes, else ``None``."""
    if place is None or not place.explicit:
        return None
    spec = jax.typeof(x).sharding.spec
    return PartitionSpec(*spec, *[None] * (jnp.ndim(x) - len(spec)))


def _pairs(dtype: np.dtype, qmap: QuantMap) -> bool:
    """Whether both parts of a complex array are stored (see :func:`quantize`)."""
    return bool(jnp.issubdtype(dtype, jnp.complexfloating)) and not qmap.non_negative


def _chunk_layout(size: int, shards: int, block_size: int) -> tuple[int, int]:
    """Elements per chunk and blocks per chunk of the ``shards`` layout."""
    chunk = -(-size // shards)
    return chunk, -(-chunk // block_size)


def _to_chunks(
    x: jax.Array, shards: int, block_size: int, place: _Placement | None
) -> jax.Array:
    """``x`` as a float32 ``(shards * blocks_per_chunk, block_size)`` grid."""
    size = math.prod(x.shape)
    chunk, blocks = _chunk_layout(size, shards, block_size)
    if place is None:
        flat = jnp.ravel(x)
        flat = jnp.pad(flat, (0, shards * chunk - size)).reshape(shards, chunk)
    elif x.shape[0] % shards == 0:
        # Leading axis over every device first (an all-to-all at most), so
        # the chunks are local rows.
        x = place.put(x, place.spec(x.ndim))
        flat = place.reshape(x, (shards, chunk), place.spec(2))
    else:
        flat = place.reshape(x, (size,), PartitionSpec(None))
        flat = jnp.pad(flat, (0, shards * chunk - size))
        flat = place.reshape(flat, (shards, chunk), place.spec(2))
    flat = flat.astype(jnp.float32)
    if blocks * block_size != chunk:
        flat = jnp.pad(flat, ((0, 0), (0, blocks * block_size - chunk)))
    grid_shape = (shards * blocks, block_size)
    if place is None:
        return flat.reshape(grid_shape)
    return place.reshape(flat, grid_shape, place.spec(2))


def _from_chunks(
    values: jax.Array,
    shape: tuple[int, ...],
    shards: int,
    spec: PartitionSpec | None,
) -> jax.Array:
    """The inverse of :func:`_to_chunks`: ``values`` back to ``shape``."""
    place = _placement(values)
    if place is not None and place.devices != shards:
        place = None
    size = math.prod(shape)
    chunk, blocks = _chunk_layout(size, shards, values.shape[-1])
    rows = (shards, blocks * values.shape[-1])
    if place is None:
        flat = values.reshape(rows)[:, :chunk].reshape(-1)[:size]
        return flat.reshape(shape)
    flat = place.reshape(values, rows, place.spec(2))[:, :chunk]
    if shape[0] % shards == 0:
        out = place.reshape(flat, shape, place.spec(len(shape)))
    else:
        flat = place.reshape(flat, (shards * chunk,), PartitionSpec(None))
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
