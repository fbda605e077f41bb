"""Block-wise quantized optimizer state: maps, error bounds, edge cases, checkpoints."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec

import jaxopt_rules as jr
from jaxopt_rules.quantized import QuantizedArray, QuantMap, is_quantized, quantize
from jaxopt_rules.quantized._maps import decode, encode, max_gap


MAPS = [
    QuantMap("signed", 8),
    QuantMap("unsigned", 8),
    QuantMap("signed", 4),
    QuantMap("linear", 4),
]
MAP_IDS = [f"{m.kind}{m.bits}" for m in MAPS]


def _blocks(qmap: QuantMap, seed: int) -> np.ndarray:
    """Blocks of 256 values spanning many magnitudes (and signs if allowed)."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-30, 30, size=(64, 1))
    magnitude = 10.0 ** rng.uniform(-12, 0, size=(64, 256))
    values = scale * magnitude
    if not qmap.non_negative:
        values *= rng.choice([-1.0, 1.0], size=values.shape)
    return values.astype(np.float32)


@pytest.mark.parametrize("qmap", MAPS, ids=MAP_IDS)
def test_map_values_are_sorted_distinct_and_reach_one(qmap):
    values = qmap.values()
    assert values.shape == (2**qmap.bits,)
    assert values.max() == 1.0
    if qmap.kind == "signed":
        assert values.min() == -1.0
        assert 0.0 in values
    else:  # zero-free: a second moment is never decoded as zero
        assert values.min() > 0.0
    distinct = np.unique(values)
    # A signed map has +0 and -0; every other code is a distinct value.
    assert len(distinct) == 2**qmap.bits - (1 if qmap.kind == "signed" else 0)


@pytest.mark.parametrize("qmap", MAPS, ids=MAP_IDS)
def test_decode_matches_the_map_and_encode_inverts_it(qmap):
    codes = jnp.arange(2**qmap.bits, dtype=jnp.uint8)
    np.testing.assert_array_equal(np.asarray(decode(qmap, codes)), qmap.values())
    values = jnp.asarray(qmap.values(), jnp.float32)
    again = np.asarray(decode(qmap, encode(qmap, values)))
    np.testing.assert_array_equal(again, np.asarray(values))


@pytest.mark.parametrize("qmap", MAPS, ids=MAP_IDS)
def test_encode_picks_the_nearest_map_value(qmap):
    rng = np.random.default_rng(0)
    low = -1.0 if qmap.kind == "signed" else 0.0
    x = np.concatenate(
        [rng.uniform(low, 1, 3000), rng.uniform(low, 1, 3000) * 1e-3]
    ).astype(np.float32)
    got = np.asarray(decode(qmap, encode(qmap, jnp.asarray(x))), np.float64)
    table = qmap.values()
    best = np.min(np.abs(x[:, None].astype(np.float64) - table[None, :]), axis=1)
    np.testing.assert_allclose(np.abs(got - x), best, rtol=0, atol=1e-7)


@pytest.mark.parametrize("block_size", [256, 128, 64])
@pytest.mark.parametrize("qmap", MAPS, ids=MAP_IDS)
def test_round_trip_error_is_bounded_per_block(qmap, block_size):
    """Each element errs by at most half the map's gap at its code, times absmax.

    Zero-free maps also err by up to their smallest value for elements below
    it (they are stored as that value): the bound is then that value.
    """
    x = _blocks(qmap, seed=block_size).reshape(-1, block_size)
    q = quantize(jnp.asarray(x), qmap, block_size)
    back = np.asarray(q.dequantize(), np.float64)
    absmax = np.max(np.abs(x.astype(np.float64)), axis=1, keepdims=True)
    np.testing.assert_array_equal(np.asarray(q.scales)[:, None], absmax)
    codes = np.asarray(
        jax.vmap(lambda row: encode(qmap, row))(
            jnp.asarray(x) / jnp.asarray(absmax, jnp.float32)
        )
    )
    half_gap = max_gap(qmap)[codes] / 2
    if qmap.non_negative:
        half_gap = np.maximum(half_gap, qmap.values().min())
    # float32 normalisation and decoding add a few ulps of the absmax.
    bound = absmax * (half_gap + 4e-7)
    error = np.abs(back - x.astype(np.float64))
    assert np.all(error <= bound), float(np.max(error / bound))
    # The largest element of each block is stored exactly.
    top = np.argmax(np.abs(x), axis=1)
    rows = np.arange(x.shape[0])
    np.testing.assert_array_equal(back[rows, top], x[rows, top])


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_shapes_padding_and_dtype(bits):
    x = jnp.linspace(-1.0, 1.0, 1000, dtype=jnp.bfloat16).reshape(10, 100)
    q = quantize(x, QuantMap("signed", bits), 64)
    assert q.codes.dtype == jnp.uint8
    assert q.codes.shape == (16, 64 * bits // 8)
    assert q.scales.shape == (16,)
    back = q.dequantize()
    assert back.shape == (10, 100)
    assert back.dtype == jnp.bfloat16


@pytest.mark.parametrize("bits", [8, 4])
def test_zeros_outliers_and_denormals_give_no_nan(bits):
    tx = jr.quantized_state(jr.adam(1e-2), bits=bits, block_size=64, min_size=0)
    zeros = jnp.zeros((256,))
    # (1e15: its square, Adam's second moment, still fits in float32.)
    outlier = jnp.full((256,), 1e-3).at[7].set(1e15)
    denormal = jnp.full((256,), 1e-40)  # below float32's smallest normal
    params = {"zeros": zeros, "outlier": zeros, "denormal": zeros}
    grads = {"zeros": zeros, "outlier": outlier, "denormal": denormal}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        updates, state = update(grads, state, params)
        for leaf in jax.tree.leaves((updates, state)):
            assert not np.any(np.isnan(np.asarray(leaf, np.float64)))
    np.testing.assert_array_equal(np.asarray(updates["zeros"]), 0.0)
    # Adam's step is -lr * sign(g) for a constant gradient: the outlier's too.
    np.testing.assert_allclose(np.asarray(updates["outlier"])[7], -1e-2, rtol=1e-3)
    # Its neighbours' second moments sit below the smallest map value: they
    # are overestimated, so their steps shrink, never blow up.
    assert np.all(np.abs(np.asarray(updates["outlier"])) <= 1e-2 * (1 + 1e-3))
    inner = jax.tree.map(
        lambda x: x.dequantize() if is_quantized(x) else x,
        state.inner,
        is_leaf=is_quantized,
    )
    assert np.asarray(inner.mu["outlier"])[7] > 0
    # A block whose absmax is not a normal float32 is stored as zeros.
    np.testing.assert_array_equal(np.asarray(inner.mu["denormal"]), 0.0)


def test_non_finite_values_poison_only_their_block():
    x = jnp.ones((512,)).at[3].set(jnp.nan)
    back = np.asarray(quantize(x, QuantMap("signed", 8), 256).dequantize())
    assert np.all(np.isnan(back[:256]))
    np.testing.assert_array_equal(back[256:], 1.0)


def test_small_leaves_and_integers_stay_as_they_are():
    tx = jr.quantized_state(jr.adam(1e-3))  # min_size 4096
    params = {"w": jnp.zeros((64, 128)), "b": jnp.zeros((128,))}
    state = tx.init(params)
    assert is_quantized(state.inner.mu["w"])
    assert is_quantized(state.inner.nu["w"])
    assert state.inner.mu["b"].dtype == jnp.float32
    assert state.inner.mu["b"].shape == (128,)
    assert state.inner.count.dtype == jnp.int32


def test_maps_follow_the_slot_names():
    params = {"w": jnp.zeros((4096,)), "nu": jnp.zeros((4096,))}
    state = jr.quantized_state(jr.adam(1e-3)).init(params)
    assert state.inner.mu["w"].qmap.kind == "signed"
    assert state.inner.nu["w"].qmap.kind == "unsigned"
    # A parameter named like a slot is not mistaken for one.
    assert state.inner.mu["nu"].qmap.kind == "signed"
    state4 = jr.quantized_state(optax.adam(1e-3), bits=4).init(params)
    inner = state4.inner[0]
    assert inner.mu["w"].qmap.kind == "signed"
    assert inner.nu["w"].qmap.kind == "linear"
    custom = jr.quantized_state(jr.sgd(1e-3, momentum=0.9), non_negative={"trace"})
    assert custom.init(params).inner.trace["w"].qmap.kind == "unsigned"


def test_copies_of_the_parameters_stay_in_full_precision():
    params = {"w": jnp.linspace(-1.0, 1.0, 4096), "x0": jnp.zeros((4096,))}
    state = jr.quantized_state(jr.cocob()).init(params)
    inner = state.inner
    # The initial parameters, exactly; the other slots quantized.
    np.testing.assert_array_equal(inner.init_particles["w"], params["w"])
    assert not jr.is_quantized(inner.init_particles["w"])
    assert jr.is_quantized(inner.reward["w"])
    # A parameter named like such a slot is quantized as any other.
    assert jr.is_quantized(inner.reward["x0"])
    # Chosen by field name or predicate instead.
    sgd = jr.sgd(1e-3, momentum=0.9)
    kept = jr.quantized_state(sgd, full_precision={"trace"}).init(params)
    assert not jr.is_quantized(kept.inner.trace["w"])
    none = jr.quantized_state(jr.cocob(), full_precision=lambda path, leaf: False)
    assert jr.is_quantized(none.init(params).inner.init_particles["w"])
    with pytest.raises(TypeError, match=r"the string 'trace'; pass \['trace'\]"):
        jr.quantized_state(sgd, full_precision="trace")


def test_bytes_per_parameter_targets():
    params = {"w": jnp.zeros((1024, 1024))}
    n = 1024 * 1024
    float32 = jr.tree_bytes(jr.adam(1e-3).init(params)) / n
    eight = jr.tree_bytes(jr.quantized_state(jr.adam(1e-3), bits=8).init(params)) / n
    four = jr.tree_bytes(jr.quantized_state(jr.adam(1e-3), bits=4).init(params)) / n
    assert float32 == pytest.approx(8.0, abs=1e-4)
    assert eight <= 2.1
    assert eight == pytest.approx(2 * (1 + 4 / 256), abs=1e-4)
    assert four <= 1.1
    assert four == pytest.approx(2 * (0.5 + 4 / 128), abs=1e-4)


def _quadratic_run(tx, steps, params, state=None):
    target = jax.random.normal(jax.random.key(1), params["w"].shape)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params) if state is None else state
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("bits", [8, 4])
def test_saved_and_restored_state_continues_exactly(bits, tmp_path):
    tx = jr.quantized_state(jr.adamw(1e-2), bits=bits, min_size=1024)
    params = {"w": jnp.zeros((64, 64)), "b": jnp.zeros((8,))}
    straight, straight_state = _quadratic_run(tx, 10, params)
    half, half_state = _quadratic_run(tx, 5, params)
    # Save as plain numpy arrays (what a checkpoint holds), restore, go on.
    path = tmp_path / "state.pkl"
    leaves, treedef = jax.tree.flatten((half, half_state))
    path.write_bytes(pickle.dumps([np.asarray(x) for x in leaves]))
    restored = [jnp.asarray(x) for x in pickle.loads(path.read_bytes())]
    params2, state2 = jax.tree.unflatten(treedef, restored)
    resumed, resumed_state = _quadratic_run(tx, 5, params2, state2)
    for a, b in zip(
        jax.tree.leaves((straight, straight_state)),
        jax.tree.leaves((resumed, resumed_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("bits", "loss_tolerance", "param_tolerance"),
    [(8, 5e-4, 0.01), (4, 3e-3, 0.03)],
    ids=["8bit", "4bit"],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda: jr.adam(3e-2),
        lambda: optax.adam(3e-2),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), jr.lion(3e-3)),
    ],
    ids=["jr.adam", "optax.adam", "chain(clip, lion)"],
)
def test_trajectory_stays_close_to_full_precision(
    make, bits, loss_tolerance, param_tolerance
):
    """On a quadratic (target ~ N(0, 1)), 100 steps: loss and mean deviation.

    Measured (loss / initial loss, 8-bit and 4-bit vs float32): Adam 0.0049
    and 0.0059 vs 0.0049; Lion 0.5993 and 0.5993 vs 0.5993. Mean |param
    difference|: Adam 0.0026 and 0.015, Lion 0.0013 and 0.0049.
    """
    params = {"w": jnp.zeros((128, 64))}
    target = jax.random.normal(jax.random.key(1), (128, 64))
    initial = float(jnp.sum(target**2))
    full, _ = _quadratic_run(make(), 100, params)
    quantized, _ = _quadratic_run(jr.quantized_state(make(), bits=bits), 100, params)
    loss_full = float(jnp.sum((full["w"] - target) ** 2)) / initial
    loss_quantized = float(jnp.sum((quantized["w"] - target) ** 2)) / initial
    assert abs(loss_quantized - loss_full) <= loss_tolerance
    deviation = float(jnp.mean(jnp.abs(full["w"] - quantized["w"])))
    assert deviation <= param_tolerance


def test_state_shards_like_the_params_along_the_leading_axis():
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (conftest sets 8 CPU devices)")
    mesh = jax.make_mesh(
        (4,), ("x",), axis_types=(AxisType.Explicit,), devices=devices[:4]
    )
    tx = jr.quantized_state(jr.adam(1e-3), bits=8)
    with jax.set_mesh(mesh):
        params = {"w": jax.device_put(jnp.ones((512, 256)), PartitionSpec("x", None))}
        state = jax.jit(tx.init)(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = jax.jit(tx.update)(grads, state, params)
    for q in (state.inner.mu["w"], state.inner.nu["w"]):
        assert q.codes.sharding.spec == PartitionSpec("x", None)
        assert q.scales.sharding.spec == PartitionSpec("x")
    assert updates["w"].sharding.spec == PartitionSpec("x", None)


def test_quantized_array_is_a_pytree_of_plain_arrays():
    q = quantize(jnp.arange(300.0), QuantMap("signed", 8), 256)
    leaves = jax.tree.leaves(q)
    assert [x.dtype for x in leaves] == [jnp.uint8, jnp.float32]
    assert isinstance(jax.tree.map(lambda x: x, q), QuantizedArray)
    doubled = jax.jit(lambda q: q.dequantize() * 2)(q)
    # At most half the top level's step ((15/16)/64 of the absmax) per element.
    error = np.abs(np.asarray(doubled) - 2 * np.arange(300.0))
    assert np.all(error[:256] <= 2 * 255 * (15 / 16) / 128 + 1e-4)
    assert np.all(error[256:] <= 2 * 299 * (15 / 16) / 128 + 1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        jr.quantized_state(jr.adam(1e-3), bits=3)
    with pytest.raises(ValueError, match="block_size"):
        jr.quantized_state(jr.adam(1e-3), block_size=255)
    with pytest.raises(ValueError, match="min_size"):
        jr.quantized_state(jr.adam(1e-3), min_size=-1)
    with pytest.raises(TypeError, match="GradientTransformation"):
        jr.quantized_state(lambda g: g)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [8, 4])
def test_a_non_finite_element_poisons_its_block_at_every_position(bits):
    """NaN at each position of a block, in full blocks and the padded last one."""
    block = 256 if bits == 8 else 128
    qmap = QuantMap("signed", bits)
    rng = np.random.default_rng(bits)
    # Block b holds its NaN at position b; one clean block at the end.
    grid = rng.uniform(-1, 1, (block + 1, block)).astype(np.float32)
    grid[np.arange(block), np.arange(block)] = np.nan
    back = np.asarray(quantize(jnp.asarray(grid), qmap, block).dequantize())
    assert np.all(np.isnan(back[:block])), np.argwhere(~np.isnan(back[:block]))[:5]
    assert np.all(np.isfinite(back[block]))
    # The padded last block (block // 2 + 3 elements after two full blocks),
    # and infinities of either sign.
    tail = block // 2 + 3
    base = jnp.asarray(rng.uniform(-1, 1, 2 * block + tail).astype(np.float32))

    @jax.jit
    def poisoned(position, value):
        return quantize(base.at[position].set(value), qmap, block).dequantize()

    for value in (jnp.nan, jnp.inf, -jnp.inf):
        for position in range(2 * block, 2 * block + tail):
            out = np.asarray(poisoned(position, value))
            assert np.all(np.isnan(out[2 * block :])), (value, position)
            assert np.all(np.isfinite(out[: 2 * block])), (value, position)
    for position in (0, block - 1, block, 2 * block - 1):
        out = np.asarray(poisoned(position, jnp.inf))
        lo = position // block * block
        assert np.all(np.isnan(out[lo : lo + block]))
        assert np.isfinite(out).sum() == out.size - block


@pytest.mark.parametrize("bits", [8, 4])
def test_a_nan_gradient_makes_the_next_update_of_its_block_nan(bits):
    """The documented behaviour through the wrapper, at every position of a block.

    The NaN's own block of the state is NaN, so the next update is NaN there
    (apply_if_finite and log_step see it) and finite everywhere else.
    """
    block = 256 if bits == 8 else 128
    tx = jr.quantized_state(jr.adam(1e-2), bits=bits, min_size=0)
    params = {"w": jnp.zeros((3 * block + 5,))}
    ones = jnp.ones_like(params["w"])

    @jax.jit
    def next_update(position):
        state = tx.init(params)
        _, state = tx.update({"w": ones.at[position].set(jnp.nan)}, state, params)
        return tx.update({"w": ones}, state, params)[0]["w"]

    positions = [*range(block), *range(3 * block, 3 * block + 5)]
    for position in positions:
        u = np.asarray(next_update(position))
        lo = position // block * block
        assert np.all(np.isnan(u[lo : lo + block])), position
        assert np.isfinite(u).sum() == u.size - min(block, u.size - lo), position


def test_bits_must_be_an_integer_and_the_wrapper_applied_once():
    with pytest.raises(TypeError, match=r"bits must be the integer 8 or 4, got 8\.0"):
        jr.quantized_state(jr.adam(1e-3), bits=8.0)  # type: ignore[arg-type]
    assert jr.quantized_state(jr.adam(1e-3), bits=np.int64(4)) is not None  # type: ignore[arg-type]
    once = jr.quantized_state(jr.adam(1e-3))
    with pytest.raises(ValueError, match="applied twice"):
        jr.quantized_state(once)
    nested = jr.quantized_state(optax.chain(optax.clip(1.0), once))
    with pytest.raises(ValueError, match=r"applied twice.*|already holds quantized"):
        nested.init({"w": jnp.zeros((64, 64))})


@pytest.mark.parametrize("bits", [8, 4])
def test_complex_state_is_quantized_as_real_and_imaginary_parts(bits):
    """optax.adam on complex params: mu's two parts quantized; nu's real part.

    optax keeps nu (|g|^2) in a complex array with a zero imaginary part: its
    real part gets the unsigned map, its imaginary part reads as zero.
    """
    shape = (64, 96)
    key_re, key_im = jax.random.split(jax.random.key(2))
    target = (
        jax.random.normal(key_re, shape) + 1j * jax.random.normal(key_im, shape)
    ).astype(jnp.complex64)
    params = {"z": jnp.zeros(shape, jnp.complex64)}

    def loss(p):
        return jnp.sum(jnp.abs(p["z"] - target) ** 2)

    def run(tx):
        state = tx.init(params)

        @jax.jit
        def step(p, state):
            # JAX's gradient of a real loss in complex z is conj(dL/dz*).
            grads = jax.tree.map(jnp.conj, jax.grad(loss)(p))
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        p = params
        for _ in range(50):
            p, state = step(p, state)
        return p, state

    full, full_state = run(optax.adam(3e-2))
    quantized, state = run(jr.quantized_state(optax.adam(3e-2), bits=bits))
    mu, nu = state.inner[0].mu["z"], state.inner[0].nu["z"]
    assert is_quantized(mu)
    assert mu.dtype == jnp.complex64
    assert mu.codes.size == 2 * target.size * bits // 8  # re and im
    assert is_quantized(nu)
    assert nu.dtype == jnp.complex64
    assert nu.qmap.kind != "signed"
    assert nu.codes.size == target.size * bits // 8  # the real part only
    np.testing.assert_array_equal(np.asarray(nu.dequantize()).imag, 0.0)
    nu_ref = np.asarray(full_state[0].nu["z"]).real
    assert np.all(np.asarray(nu.dequantize()).real > 0)
    assert np.asarray(nu.dequantize()).real.max() <= nu_ref.max() * 1.5
    assert mu.dequantize().dtype == jnp.complex64
    # Each part errs by at most half the map's widest gap times the absmax.
    ref = full_state[0].mu["z"]
    qmap = QuantMap("signed", bits)
    back = np.asarray(quantize(ref, qmap, 256 if bits == 8 else 128).dequantize())
    assert back.dtype == np.complex64
    assert back.shape == shape
    ref = np.asarray(ref)
    bound = np.max(np.abs(np.stack([ref.real, ref.imag]))) * max_gap(qmap).max() / 2
    assert np.max(np.abs(back.real - ref.real)) <= bound * 1.001
    assert np.max(np.abs(back.imag - ref.imag)) <= bound * 1.001
    initial = float(loss(params))
    assert float(loss(quantized)) / initial <= float(loss(full)) / initial + 0.01
