"""Shampoo's matrix machinery: refreshes behind lax.cond, blocks, safeguards.

Its numbers are verified against pytorch_optimizer.ScalableShampoo in
test_authors.py (blocks of 3 and 4 on leaves that are not multiples of them,
so the zero padding is covered there).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import step_through_ill_conditioned_gradients
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import jaxopt_rules as jr
from jaxopt_rules.rules._shampoo import from_blocks, layout, merge_dims, to_blocks


def _grads(k: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    rng = np.random.default_rng(200 + k)
    return {n: jnp.asarray(rng.normal(size=s), jnp.float32) for n, s in shapes.items()}


def test_roots_change_only_at_refresh_steps_and_the_program_has_a_cond():
    tx = jr.shampoo(
        1e-2,
        block_size=3,
        start_preconditioning_step=1,
        preconditioning_compute_steps=3,
    )
    params = {"w": jnp.zeros((4, 5))}
    state = tx.init(params)
    assert "cond[" in str(jax.make_jaxpr(tx.update)(params, state, params))
    update = jax.jit(tx.update)
    changed = []
    for k in range(1, 10):
        before = state.roots["w"]
        _, state = update(_grads(k, {"w": (4, 5)}), state, params)
        assert state.roots["w"].dtype == before.dtype
        assert state.roots["w"].shape == before.shape
        changed.append(not np.array_equal(before, state.roots["w"]))
    assert changed == [k % 3 == 0 for k in range(1, 10)]


def test_statistics_every_k_steps():
    tx = jr.shampoo(1e-2, block_size=4, statistics_compute_steps=2)
    params = {"w": jnp.zeros((3, 4))}
    state = tx.init(params)
    update = jax.jit(tx.update)
    changed = []
    for k in range(1, 7):
        before = state.factors["w"]
        _, state = update(_grads(k, {"w": (3, 4)}), state, params)
        changed.append(not np.array_equal(before, state.factors["w"]))
    assert changed == [False, True, False, True, False, True]


@pytest.mark.parametrize("shape", [(4, 5), (7, 3, 2), (6, 6)])
def test_blocks_round_trip(shape):
    lay = layout(shape, 3, False, 8192)
    assert lay is not None
    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    blocks = to_blocks(x, lay)
    assert blocks.shape == (np.prod(lay.counts), *lay.block)
    np.testing.assert_array_equal(from_blocks(blocks, lay), x)
    # The first block is the leaf's corner.
    np.testing.assert_array_equal(blocks[0], x[tuple(slice(0, b) for b in lay.block)])


def test_merge_dims_drops_ones_and_merges_while_a_block_fits():
    assert merge_dims((3, 3, 64, 128), 1024) == (576, 128)
    assert merge_dims((1, 600, 600), 512) == (600, 600)
    assert merge_dims((1, 1), 8) == (1,)
    # A merged leaf of rank one is stepped by the graft alone.
    assert layout((4, 5), 512, True, 8192) is None
    assert layout((4, 5), 512, False, 8192) is not None
    assert layout((4, 9000), 512, False, 8192) is None  # max_precondition_dim


@pytest.mark.parametrize("frequency", [1, 4])
@pytest.mark.parametrize(
    ("graft", "root_method"),
    [("sgd", "eigh"), ("adagrad", "eigh"), ("none", "eigh"), ("sgd", "newton")],
)
def test_ill_conditioned_and_degenerate_gradients_give_no_nan(
    frequency, graft, root_method
):
    tx = jr.shampoo(
        1e-3,
        graft=graft,
        root_method=root_method,
        block_size=4,
        start_preconditioning_step=1,
        preconditioning_compute_steps=frequency,
    )
    step_through_ill_conditioned_gradients(tx)


def test_the_graft_sets_the_norm_and_shampoo_the_direction():
    """Without momentum, each step has the SGD graft's norm, lr |g|."""
    tx = jr.shampoo(
        0.1,
        b1=0.0,
        block_size=4,
        start_preconditioning_step=1,
        preconditioning_compute_steps=1,
    )
    params = {"w": jnp.zeros((4, 6))}
    state = tx.init(params)
    for k in range(3):
        g = _grads(k, {"w": (4, 6)})
        updates, state = tx.update(g, state, params)
        np.testing.assert_allclose(
            jnp.linalg.norm(updates["w"]), 0.1 * jnp.linalg.norm(g["w"]), rtol=1e-5
        )
        cosine = jnp.vdot(updates["w"], -g["w"]) / (
            jnp.linalg.norm(updates["w"]) * jnp.linalg.norm(g["w"])
        )
        assert 0.0 < cosine < 0.999  # a descent direction, not the gradient's


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="graft must be one of"):
        jr.shampoo(graft="adam")
    with pytest.raises(TypeError, match="block_size must be an int"):
        jr.shampoo(block_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inverse_exponent"):
        jr.shampoo(inverse_exponent=0)
    with pytest.raises(ValueError, match="root_method must be"):
        jr.shampoo(root_method="svd")


def test_under_explicit_sharding_each_device_decomposes_its_share_of_blocks():
    """A (16, 16) leaf in blocks of 4 on 8 devices: 2 of the 16 blocks each.

    The compiled program's eigendecompositions take 2 blocks per device (not
    16), each device stores its blocks' factors and roots (rows spread like
    the blocks, after init and after the steps), the moments stay sharded
    like the parameter, and the numbers are those of one device.
    """
    tx = jr.shampoo(
        1e-2,
        block_size=4,
        start_preconditioning_step=1,
        preconditioning_compute_steps=1,
    )
    rng = np.random.default_rng(0)
    host = {"w": rng.normal(size=(16, 16)).astype(np.float32)}
    grads = [{"w": rng.normal(size=(16, 16)).astype(np.float32)} for _ in range(3)]

    def run(put):
        params = put(host)
        state = tx.init(params)
        initial.append(state)
        initial.append(jax.jit(tx.init)(params))
        step = jax.jit(tx.update)
        for g in grads:
            updates, state = step(put(g), state, params)
            params = optax.apply_updates(params, updates)
        return params, state, step

    initial = []
    single, _, _ = run(lambda t: jax.tree.map(jnp.asarray, t))
    initial.clear()
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        sharding = NamedSharding(mesh, PartitionSpec("x", None))
        sharded, state, step = run(lambda t: jax.device_put(t, sharding))
        hlo = step.lower(jax.device_put(host, sharding), state, sharded)
        hlo = hlo.compile().as_text()
    for s in (*initial, state):
        for rows in (s.factors["w"], s.roots["w"]):
            assert rows.shape == (16, 2 * 16)  # a row per block: 2 factors of 4x4
            assert rows.sharding.spec == PartitionSpec("x", None)
            assert rows.addressable_shards[0].data.shape == (2, 32)
    eigh_calls = [line for line in hlo.splitlines() if "syevd" in line]
    assert eigh_calls
    assert all("f32[2,4,4]" in line for line in eigh_calls)
    assert jax.typeof(state.mu["w"]).sharding.spec == PartitionSpec("x", None)
    np.testing.assert_allclose(sharded["w"], single["w"], rtol=1e-5, atol=1e-6)
