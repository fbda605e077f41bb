"""Block-wise quantization of one array: absmax per block, one code per element.

The array is flattened in row-major order and cut into blocks of
``block_size`` elements (the last one padded with zeros). Each block is stored
as its absmax (float32) and one code per element from a :class:`QuantMap`;
4-bit codes are packed two to a byte (the first half of the block in the low
nibbles, the second half in the high ones, so packing is two contiguous
slices, not a strided gather).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, PartitionSpec

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
        scales: float32, shape ``(blocks,)``: each block's absmax.
        shape: the logical shape.
        dtype: the logical dtype (what :meth:`dequantize` returns).
        qmap: the quantization map.
        spec: the logical array's ``PartitionSpec`` under a mesh with
            explicit axes (``jax.set_mesh``), restored by :meth:`dequantize`;
            ``None`` otherwise.
    """

    codes: jax.Array
    scales: jax.Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    dtype: np.dtype = dataclasses.field(metadata={"static": True})
    qmap: QuantMap = dataclasses.field(metadata={"static": True})
    spec: PartitionSpec | None = dataclasses.field(
        default=None, metadata={"static": True}
    )

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
        if self.spec is not None:
            # Explicit sharding: say where the values go (the blocks of a
            # leading-axis shard stay on its device).
            if values.size == self.size:
                flat = jax.lax.reshape(
                    values, (self.size,), out_sharding=_leading(self.spec)
                )
            else:  # padded, so replicated (see _explicit_grid)
                flat = values.reshape(-1)[: self.size]
            out = jax.lax.reshape(flat, self.shape, out_sharding=self.spec)
            return out.astype(self.dtype)
        flat = values.reshape(*values.shape[:-2], -1)[..., : self.size]
        return flat.reshape(*flat.shape[:-1], *self.shape).astype(self.dtype)

    def _decoded(self, codes: jax.Array, scales: jax.Array) -> jax.Array:
        if self.qmap.bits == 4:
            codes = jnp.concatenate([codes & 0xF, codes >> 4], axis=-1)
        return decode(self.qmap, codes) * scales[..., None]


def quantize(
    x: jax.Array, qmap: QuantMap, block_size: int, *, key: jax.Array | None = None
) -> QuantizedArray:
    """Stores ``x`` block-wise quantized with ``qmap``.

    Non-finite values poison their block (its absmax is not finite, and so is
    every decoded element); blocks whose absmax is below float32's smallest
    normal number (zeros, denormals) are stored as zeros.

    Args:
        x: a floating array.
        qmap: the quantization map.
        block_size: elements per block (even for 4-bit maps).
        key: ``None`` to round to the nearest map value; a uint32 scalar to
            round each element up or down to a neighbouring map value at
            random, unbiased (:func:`dither`); a new key gives new decisions.

    Returns:
        The :class:`QuantizedArray`.
    """
    shape, dtype = tuple(x.shape), np.dtype(x.dtype)
    size = math.prod(shape)
    blocks = -(-size // block_size)
    spec = _explicit_spec(x)
    if spec is not None:
        grid = _explicit_grid(x, spec, blocks, block_size)
        codes, scales = _encode_blocks(grid, qmap, key)
        return QuantizedArray(codes, scales, shape, dtype, qmap, spec)
    flat = jnp.ravel(x).astype(jnp.float32)
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
    # Zero and denormal blocks are stored as zeros (no 1/absmax overflow).
    usable = absmax >= _TINY
    scales = jnp.where(usable | ~jnp.isfinite(absmax), absmax, 0.0)
    inverse = jnp.where(usable, 1.0 / jnp.where(usable, absmax, 1.0), 0.0)
    normalized = grid * inverse[:, None]
    noise = None if key is None else dither(normalized.shape, key)
    codes = encode(qmap, normalized, noise)
    if qmap.bits == 4:
        half = grid.shape[-1] // 2
        codes = codes[:, :half] | (codes[:, half:] << 4)
    return codes, scales


def _explicit_spec(x: jax.Array) -> PartitionSpec | None:
    """``x``'s spec when it is sharded over explicit mesh axes, else ``None``."""
    try:
        sharding = jax.typeof(x).sharding
    except TypeError:  # not a JAX value
        return None
    mesh = getattr(sharding, "mesh", None)
    spec = getattr(sharding, "spec", None)
    if mesh is None or spec is None or not mesh.axis_names:
        return None
    if not any(t == AxisType.Explicit for t in mesh.axis_types):
        return None
    if all(entry is None for entry in spec):
        return None
    return spec


def _leading(spec: PartitionSpec) -> PartitionSpec:
    """The blocked layout's spec: blocks sharded like the leading axis."""
    return PartitionSpec(spec[0] if len(spec) else None)


def _explicit_grid(
    x: jax.Array, spec: PartitionSpec, blocks: int, block_size: int
) -> jax.Array:
    """``x`` as ``(blocks, block_size)`` under explicit sharding.

    Blocks stay sharded like ``x``'s leading axis when every shard holds
    whole blocks; otherwise the grid is replicated (the reshape gathers).
    """
    size = math.prod(x.shape)
    flat_spec = _leading(spec)
    leading = flat_spec[0]
    if blocks * block_size != size or leading is None:
        flat = jax.lax.reshape(x, (size,), out_sharding=PartitionSpec(None))
        flat = jnp.pad(flat.astype(jnp.float32), (0, blocks * block_size - size))
        return jax.lax.reshape(
            flat, (blocks, block_size), out_sharding=PartitionSpec(None, None)
        )
    mesh_shape = jax.typeof(x).sharding.mesh.shape
    axes = leading if isinstance(leading, tuple) else (leading,)
    shards = math.prod(mesh_shape[a] for a in axes)
    grid_spec = PartitionSpec(leading if blocks % shards == 0 else None, None)
    flat = jax.lax.reshape(x, (size,), out_sharding=flat_spec).astype(jnp.float32)
    return jax.lax.reshape(flat, (blocks, block_size), out_sharding=grid_spec)


def dither(shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    """Uniform numbers in [0, 1), one per element, for stochastic rounding.

    A hash of each element's position and a uint32 ``key`` (the wrapper's
    step count and the leaf's number): no random state to carry, the same
    numbers on every device and sharding, new numbers every step.
    """
    bits = element_bits(shape, key)
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def quantized_bytes(shape: tuple[int, ...], bits: int, block_size: int) -> int:
    """Bytes :func:`quantize` stores for an array of ``shape``."""
    blocks = -(-math.prod(shape) // block_size)
    return blocks * (block_size * bits // 8 + 4)


def is_quantized(x: Any) -> bool:
    """Whether ``x`` is a :class:`QuantizedArray` (an ``is_leaf`` for tree maps)."""
    return isinstance(x, QuantizedArray)
