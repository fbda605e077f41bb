"""Quantization maps: which real number in [-1, 1] each code stands for.

A block of state is divided by its largest magnitude (its *absmax*), so every
element lies in [-1, 1]; each element is then stored as the code of the nearest
value of a fixed map. Two kinds of map are used.

**Dynamic maps** (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
Quantization", section 2: dynamic tree quantization). A code's magnitude bits
``u`` (``m`` of them) hold an exponent and a linear fraction: the position of
the leading one bit of ``u`` is the *level* ``L`` (0 to ``m - 1``), the bits
after it a fraction with ``2**L`` steps. Level ``L`` covers magnitudes in
``[16**(L - m), 16**(L - m + 1)]``, so small values keep their relative
precision over ``m`` orders of sixteen (16**-7 ~ 4e-9 for an 8-bit signed map;
Dettmers' maps use powers of ten, 1e-7) and the largest values get the finest
linear steps (0.9/64 ~ 0.015 of the absmax in the top level of an 8-bit map).
Base 16 instead of 10 makes the level a power of two, so encoding and decoding
are integer and multiply operations that XLA fuses into the optimizer's
arithmetic; no table lookup and no logarithm::

    value(0) = 0                                 (signed map)
    value(u) = 16**(L - m + 1) * (1/16 + 15/16 * j / 2**L),
        L = floor(log2(u)),  j = u + 1 - 2**L  (1 <= j <= 2**L)

The top code (``u = 2**m - 1``) is exactly 1, so a block's largest element is
stored exactly. A *signed* map adds a sign bit (8-bit: 1 + 7 bits); an
*unsigned* map uses every bit for the magnitude (8-bit: 8 bits) and replaces
zero by ``16**-m``, the lower end of level 0: a second moment is then never
decoded as zero, which would blow the update ``m / (sqrt(v) + eps)`` up (the
"zero-point problem" of Li et al. 2023).

**The linear unsigned map** for 4-bit second moments (Li, Chen and Zhu 2023,
"Memory Efficient Optimizers with 4-bit States", section 4.1: a linear map
without zero)::

    value(u) = (u + 1) / 2**bits,   u = 0 .. 2**bits - 1

Encoding rounds to the nearest value of the map (the boundary between two
levels included), so the error of an element is at most half the gap between
its two neighbouring map values, times the block's absmax; that bound is
:func:`max_gap` and is what the tests check.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class QuantMap:
    """One quantization map.

    Attributes:
        kind: ``"signed"`` or ``"unsigned"`` (dynamic), or ``"linear"``
            (unsigned, zero-free, uniform).
        bits: bits per code (4 or 8).
    """

    kind: str
    bits: int

    @property
    def magnitude_bits(self) -> int:
        """Bits that hold the magnitude (all but the sign bit of a signed map)."""
        return self.bits - 1 if self.kind == "signed" else self.bits

    @property
    def non_negative(self) -> bool:
        """Whether the map holds only values >= 0 (negative inputs clip)."""
        return self.kind != "signed"

    def values(self) -> np.ndarray:
        """Every code's value, indexed by code (float64, for tests and docs)."""
        codes = np.arange(2**self.bits)
        if self.kind == "linear":
            return (codes + 1) / 2**self.bits
        m = self.magnitude_bits
        u = codes & (2**m - 1)
        with np.errstate(divide="ignore"):
            level = np.floor(np.log2(np.maximum(u, 1))).astype(np.int64)
        j = u + 1 - 2.0**level
        value = 16.0 ** (level - m + 1) * (1 / 16 + 15 / 16 * j / 2.0**level)
        value = np.where(u == 0, 0.0 if self.kind == "signed" else 16.0**-m, value)
        if self.kind == "signed":
            value = np.where(codes >> m, -value, value)
        return value


def _power_of_two(exponent: jax.Array) -> jax.Array:
    """``2.0**exponent`` for int32 exponents in the normal float32 range."""
    return jax.lax.bitcast_convert_type((exponent + 127) << 23, jnp.float32)


def encode(
    qmap: QuantMap, normalized: jax.Array, dither: jax.Array | None = None
) -> jax.Array:
    """Codes (uint8, one per element) of values already divided by the absmax.

    Two formulations give the same codes; each is the one XLA fuses best on
    its backend (measured: ``benchmarks/README.md``). On CPU, integer
    operations on the float's bits (a ``round``/``clip``/``signbit`` version
    took 2.3x as long, the float formulation 2x on one 10M leaf). On GPU,
    the magnitude in float: from the integer bits, XLA split the encoding
    into two loops with an int32 temporary (1.82x the float32 Adam step at
    100M parameters on an H100, against 1.15x).

    Args:
        qmap: the map.
        normalized: float32 values in [-1, 1] (magnitudes above 1 are stored
            as 1; negative values clip to the lowest code of a non-negative
            map).
        dither: ``None`` to round to the nearest map value; else uniform
            numbers in [0, 1), one per element, to round stochastically: up to
            the next map value with probability equal to the distance from
            the one below, over the gap (unbiased between neighbours).

    Returns:
        A uint8 array of the same shape, one code in ``[0, 2**bits)`` each.
    """
    offset = 0.5 if dither is None else dither
    if qmap.kind == "linear":
        scaled = jnp.maximum(normalized * 2.0**qmap.bits - 1.0 + offset, 0.0)
        top = 2**qmap.bits - 1
        return jnp.minimum(scaled.astype(jnp.int32), top).astype(jnp.uint8)
    if jax.default_backend() == "cpu":
        return _encode_on_bits(qmap, normalized, offset)
    return _encode_on_floats(qmap, normalized, offset)


def _level_and_steps(
    qmap: QuantMap, a: jax.Array, exponent: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Level ``L`` of magnitudes ``a`` (given their float exponents).

    Also the position of ``a`` in its level, counted in map steps from the
    level below's top value.
    """
    m = qmap.magnitude_bits
    # Level from the exponent: (floor(log2 a) + 4m) // 4, within [0, m).
    level = jnp.clip((exponent + 4 * m) >> 2, 0, m - 1)
    # a / 16**(L - m + 1), in [1/16, 1] for a within level L.
    r = a * _power_of_two(4 * (m - 1 - level))
    steps = (r - 1 / 16) * (16 / 15) * _power_of_two(level)
    if qmap.kind == "signed":
        # Below level 0 lies zero, not 16**-m: round between 0 and 16**(1-m).
        steps = jnp.where(level == 0, r, steps)
    return level, steps


def _code(level: jax.Array, steps: jax.Array, offset: Any) -> jax.Array:
    """The magnitude code: rounded half up, or by the dither.

    ``steps >= -1/15``, so truncating ``steps + offset`` is a floor.
    """
    j = jnp.minimum((steps + offset).astype(jnp.int32), 1 << level)
    return (1 << level) - 1 + j


def _encode_on_bits(qmap: QuantMap, normalized: jax.Array, offset: Any) -> jax.Array:
    m = qmap.magnitude_bits
    bits = jax.lax.bitcast_convert_type(normalized, jnp.int32)
    # |x| by clearing the sign bit, then at most 1.0 (its bits: 0x3F800000).
    magnitude_bits = jnp.minimum(bits & 0x7FFFFFFF, 0x3F800000)
    if qmap.kind != "signed":
        magnitude_bits = jnp.where(bits < 0, 0, magnitude_bits)
    a = jax.lax.bitcast_convert_type(magnitude_bits, jnp.float32)
    level, steps = _level_and_steps(qmap, a, (magnitude_bits >> 23) - 127)
    u = _code(level, steps, offset)
    if qmap.kind == "signed":
        u = u | ((bits >> 31) & (1 << m))
    return u.astype(jnp.uint8)


def _encode_on_floats(qmap: QuantMap, normalized: jax.Array, offset: Any) -> jax.Array:
    m = qmap.magnitude_bits
    if qmap.kind == "signed":
        a = jnp.minimum(jnp.abs(normalized), 1.0)
    else:
        a = jnp.clip(normalized, 0.0, 1.0)
    exponent = (jax.lax.bitcast_convert_type(a, jnp.int32) >> 23) - 127
    level, steps = _level_and_steps(qmap, a, exponent)
    u = _code(level, steps, offset)
    if qmap.kind == "signed":
        u = jnp.where(normalized < 0, u | (1 << m), u)
    return u.astype(jnp.uint8)


def decode(qmap: QuantMap, codes: jax.Array) -> jax.Array:
    """The float32 values (in [-1, 1]) that ``codes`` stand for."""
    if qmap.kind == "linear":
        return (codes.astype(jnp.float32) + 1.0) * (1.0 / 2**qmap.bits)
    m = qmap.magnitude_bits
    c = codes.astype(jnp.int32)
    u = c & ((1 << m) - 1)
    level = 31 - jax.lax.clz(jnp.maximum(u, 1))
    inverse_steps = _power_of_two(-level)  # 2**-L
    j = (u + 1 - (1 << level)).astype(jnp.float32)
    value = _power_of_two(4 * (level - m + 1)) * (
        1 / 16 + (15 / 16) * j * inverse_steps
    )
    if qmap.kind == "signed":
        value = jnp.where(u == 0, 0.0, value)
        value = jnp.where(c >> m, -value, value)
    else:
        value = jnp.where(u == 0, 16.0**-m, value)
    return value


def max_gap(qmap: QuantMap) -> np.ndarray:
    """Per code, the largest distance to a neighbouring map value (float64).

    Rounding to the nearest value errs by at most half the gap on either side
    of the value chosen; the tests bound each element's error by it.
    """
    values = qmap.values()
    order = np.argsort(values)
    ordered = values[order]
    gaps = np.diff(ordered)
    below = np.concatenate([[0.0], gaps])
    above = np.concatenate([gaps, [0.0]])
    result = np.empty_like(values)
    result[order] = np.maximum(below, above)
    return result
