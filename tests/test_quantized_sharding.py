"""quantized_state on a mesh of 8 CPU devices (conftest): bytes per device, layouts.

Target: the 8-bit Adam state takes at most 2.1 / N bytes per parameter on
each of N devices, whatever the params' sharding, with automatic axes
(``jax.jit`` on sharded inputs) and explicit axes (``jax.set_mesh``).
"""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import load_benchmark
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jaxopt_rules as jr
from jaxopt_rules.quantized import is_quantized


pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (conftest sets 8 CPU devices)"
)

BOTH = ("data", "model")
CASES = [
    ((8, 1), (1024, 1024), P("data")),
    ((8, 1), (1024, 1024), P()),
    ((8, 1), (5003, 128), P()),
    ((2, 4), (1024, 1024), P("data")),
    ((2, 4), (1024, 1024), P(None, "model")),
    ((2, 4), (1024, 1024), P("data", "model")),
    ((2, 4), (1024, 1024), P()),
    ((2, 4), (999, 1000), P(None, "model")),
    ((2, 4), (3, 3, 64, 128), P(None, None, None, "model")),
]


def _mesh(shape, explicit):
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh(shape, BOTH, axis_types=(kind, kind))


def _most_bytes_on_a_device(tree) -> int:
    held = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return max(held.values())


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
@pytest.mark.parametrize(("mesh_shape", "shape", "spec"), CASES)
def test_eight_bit_adam_state_is_spread_over_every_device(
    mesh_shape, shape, spec, explicit
):
    mesh = _mesh(mesh_shape, explicit)
    tx = jr.quantized_state(jr.adam(1e-3), bits=8)
    sharding = NamedSharding(mesh, spec)
    params = {"w": jax.device_put(jnp.zeros(shape), sharding)}
    grads = {"w": jax.device_put(jnp.ones(shape), sharding)}

    def run():
        # Automatic axes: init outside jit, so it sees the params' shardings.
        state = jax.jit(tx.init)(params) if explicit else tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        return updates, state

    if explicit:
        with jax.set_mesh(mesh):
            updates, state = run()
    else:
        updates, state = run()
    n = math.prod(mesh_shape)
    per_param = _most_bytes_on_a_device((state.inner.mu, state.inner.nu)) / math.prod(
        shape
    )
    assert per_param <= 2.1 / n, (per_param, 2.1 / n)
    # Adam's first step is -lr * sign(g), wherever the state lives.
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3, rtol=1e-3)
    if explicit:
        assert updates["w"].sharding.is_equivalent_to(sharding, len(shape))


def test_init_on_explicitly_sharded_params_outside_set_mesh():
    """Params carrying an explicit NamedSharding, no mesh context."""
    mesh = _mesh((2, 4), explicit=True)
    params = {
        "w": jax.device_put(
            jnp.zeros((512, 256)), NamedSharding(mesh, P(None, "model"))
        )
    }
    tx = jr.quantized_state(jr.adam(1e-2), bits=8)
    state = tx.init(params)
    assert is_quantized(state.inner.mu["w"])
    assert _most_bytes_on_a_device(state.inner.mu["w"]) <= 1.05 * 512 * 256 / 8
    updates, state = jax.jit(tx.update)(
        jax.tree.map(jnp.ones_like, params), state, params
    )
    assert updates["w"].sharding.spec == P(None, "model")


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_sharded_trajectory_matches_one_device(bits, explicit):
    """The same rule on a 2x4 mesh and on one device, within quantization error."""
    shape = (96, 200)  # 19200 elements: chunks of 2400, not whole blocks
    target = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    tx = jr.quantized_state(jr.adam(3e-2), bits=bits, min_size=1024)

    def train(tx, params):
        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        for _ in range(30):
            params, state = step(params, state)
        return params, state

    single, _ = train(tx, {"w": jnp.zeros(shape)})
    full, _ = train(jr.adam(3e-2), {"w": jnp.zeros(shape)})
    mesh = _mesh((2, 4), explicit)
    sharded_params = {
        "w": jax.device_put(jnp.zeros(shape), NamedSharding(mesh, P(None, "model")))
    }
    if explicit:
        with jax.set_mesh(mesh):
            sharded, state = train(tx, sharded_params)
    else:
        sharded, state = train(tx, sharded_params)
    assert state.inner.mu["w"].shards == 8
    assert state.inner.mu["w"].codes.shape[0] % 8 == 0
    for q in (state.inner.mu["w"], state.inner.nu["w"]):
        assert {s.data.shape[0] for s in q.codes.addressable_shards} == {
            q.codes.shape[0] // 8
        }
    # The numbers stored are those of one device.
    np.testing.assert_allclose(
        np.asarray(sharded["w"]), np.asarray(single["w"]), rtol=1e-5, atol=1e-6
    )
    # Measured mean |quantized - float32|: 0.014 (8-bit), 0.092 (4-bit).
    assert float(jnp.mean(jnp.abs(single["w"] - full["w"]))) <= (
        0.02 if bits == 8 else 0.15
    )


def test_jitted_init_on_automatic_axes_keeps_params_sharded():
    """A jitted init cannot see shardings on automatic axes: one run of blocks."""
    mesh = _mesh((2, 4), explicit=False)
    specs = {"w": P("data", "model"), "v": P("data")}
    shapes = {"w": (64, 128), "v": (8192,)}
    params = {
        k: jax.device_put(jnp.ones(shapes[k]), NamedSharding(mesh, specs[k]))
        for k in specs
    }
    tx = jr.quantized_state(jr.adam(1e-3), min_size=1024)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    for init in (jax.jit(tx.init), tx.init):
        state = init(params)
        new_params, state = step(params, state)
        for k in specs:
            assert new_params[k].sharding.is_equivalent_to(
                params[k].sharding, len(shapes[k])
            ), (k, new_params[k].sharding)


def test_sharded_state_benchmark_runs(capsys):
    bench = load_benchmark("sharded_state")
    case = next(c for c in bench.cases() if c.mesh == (2, 4))
    assert bench.measure(case, explicit=False) <= bench.TARGET / 8


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_complex_state_on_a_mesh_matches_one_device(explicit):
    z = (jax.random.normal(jax.random.key(0), (64, 96)) + 1j).astype(jnp.complex64)
    tx = jr.quantized_state(optax.adam(1e-2), min_size=1024)

    def run(params):
        state = jax.jit(tx.init)(params) if explicit else tx.init(params)
        update = jax.jit(tx.update)
        grads = jax.tree.map(lambda p: p * 0 + z, params)
        for _ in range(2):
            updates, state = update(grads, state, params)
        return np.asarray(updates["z"]), state

    single, _ = run({"z": jnp.zeros_like(z)})
    mesh = _mesh((2, 4), explicit)
    params = {
        "z": jax.device_put(jnp.zeros_like(z), NamedSharding(mesh, P(None, "model")))
    }
    if explicit:
        with jax.set_mesh(mesh):
            sharded, state = run(params)
    else:
        sharded, state = run(params)
    assert state.inner[0].mu["z"].shards == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-7)
