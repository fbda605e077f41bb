"""SOAP's matrix machinery: refreshes behind lax.switch, safeguards, sharding.

Its numbers are verified against pytorch_optimizer.SOAP in test_authors.py.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import step_through_ill_conditioned_gradients
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import jaxopt_rules as jr


def _grads(k: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    """Gradients that differ from step to step (so SOAP's second step is real)."""
    rng = np.random.default_rng(100 + k)
    return {n: jnp.asarray(rng.normal(size=s), jnp.float32) for n, s in shapes.items()}


def test_bases_change_only_at_refresh_steps_and_the_program_has_a_switch():
    tx = jr.soap(1e-2, precondition_frequency=3)
    params = {"w": jnp.zeros((4, 3))}
    update = jax.jit(tx.update)
    state = tx.init(params)
    jaxpr = str(jax.make_jaxpr(tx.update)(params, state, params))
    assert "cond[" in jaxpr  # lax.switch lowers to a cond with three branches
    changed = []
    for k in range(10):
        before = state.eigenbases["w"]
        _, state = update(_grads(k, {"w": (4, 3)}), state, params)
        assert state.eigenbases["w"].dtype == before.dtype
        assert state.eigenbases["w"].shape == before.shape
        changed.append(not np.array_equal(before, state.eigenbases["w"]))
    # Step 1: eigh; then a power iteration at steps s = t - 1 = 3, 6, 9.
    assert changed == [True, False, False, True, False, False, True, False, False, True]
    q = np.asarray(state.eigenbases["w"][:16]).reshape(4, 4)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-5)  # orthonormal


@pytest.mark.parametrize("frequency", [1, 4])
def test_ill_conditioned_and_degenerate_gradients_give_no_nan(frequency):
    tx = jr.soap(1e-2, precondition_frequency=frequency, precondition_1d=True)
    step_through_ill_conditioned_gradients(tx)


def test_sharded_like_the_params_and_the_numbers_of_one_device():
    devices = jax.devices()
    assert len(devices) >= 8  # conftest.py: 8 virtual CPU devices
    shapes = {"w": (8, 4), "v": (8,), "c": (4, 2, 6)}
    specs = {
        "w": PartitionSpec("x", "y"),
        "v": PartitionSpec("x"),
        "c": PartitionSpec("x", None, "y"),
    }
    # eps 1e-3 and gradients that change from step to step: the second step
    # is not dominated by rounding noise (test_conformance's KNOWN_FAILURES).
    tx = jr.soap(1e-2, eps=1e-3, precondition_frequency=2, weight_decay=0.1)
    host = {n: np.random.default_rng(1).normal(size=s) for n, s in shapes.items()}

    def run(params, put):
        state = jax.jit(tx.init)(params)
        step = jax.jit(tx.update)
        for k in range(6):
            updates, state = step(put(_grads(k, shapes)), state, params)
            params = jax.jit(optax.apply_updates)(params, updates)
        return params, state

    plain, _ = run(
        {n: jnp.asarray(v, jnp.float32) for n, v in host.items()}, lambda g: g
    )
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh(
            (4, 2), ("x", "y"), axis_types=(axis_type, axis_type), devices=devices[:8]
        )

        def put(tree, mesh=mesh):
            return {
                n: jax.device_put(
                    jnp.asarray(x, jnp.float32), NamedSharding(mesh, specs[n])
                )
                for n, x in tree.items()
            }

        explicit = axis_type == AxisType.Explicit
        with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
            params, state = run(put(host), put)
        for n in shapes:
            want = NamedSharding(mesh, specs[n])
            for leaf in (params[n], state.mu[n], state.nu[n]):
                assert leaf.sharding.is_equivalent_to(want, len(shapes[n])), n
            np.testing.assert_allclose(params[n], plain[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_a_scanned_leaf_is_its_layers_as_separate_leaves(dtype):
    """Each layer of a scanned leaf is SOAP on its own (the verified per-leaf rule)."""
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(0)
        layers = 3
        shapes = {"w": (layers, 4, 5), "v": (layers, 6)}
        kwargs = {
            "learning_rate": 1e-2,
            "precondition_frequency": 2,
            "weight_decay": 0.1,
            "normalize_gradient": True,
            "precondition_1d": True,
        }
        scanned = jr.soap(**kwargs, scanned_layers={"w": True, "v": True})
        separate = jr.soap(**kwargs)
        params = {n: jnp.asarray(rng.normal(size=s), dtype) for n, s in shapes.items()}

        def apart(tree):
            return {f"{n}{i}": tree[n][i] for n in tree for i in range(layers)}

        a, b = params, apart(params)
        sa, sb = scanned.init(a), separate.init(b)
        assert sa.factors["w"].shape == (layers, 4 * 4 + 5 * 5)
        for k in range(6):
            g = {n: jnp.asarray(_grads(k, shapes)[n], dtype) for n in shapes}
            u, sa = jax.jit(scanned.update)(g, sa, a)
            a = optax.apply_updates(a, u)
            u, sb = jax.jit(separate.update)(apart(g), sb, b)
            b = optax.apply_updates(b, u)
        tol = 1e-12 if dtype == jnp.float64 else 1e-5
        moved = max(float(jnp.max(jnp.abs(a[n] - params[n]))) for n in shapes)
        assert moved > 0.1
        for name, value in apart(a).items():
            np.testing.assert_allclose(value, b[name], rtol=tol, atol=tol)


def test_scanned_layers_are_preconditioned_on_their_owners():
    """Each device rotates and refreshes its own layers and stores their state."""
    from helpers import check_layers_owned

    tx = jr.soap(1e-2, precondition_frequency=2, scanned_layers=True)
    check_layers_owned(tx, ("factors", "eigenbases"))


def test_scanned_layers_under_shard_map_are_the_layers_of_one_device():
    """Inside ``shard_map`` over the layer axis, each device steps its own layers.

    A scanned layer's step reads nothing of the other layers, so the rule
    run per device on its local layers (state included) gives the numbers
    of the whole stack on one device.
    """
    from jax.sharding import PartitionSpec as P

    tx = jr.soap(1e-2, precondition_frequency=2, scanned_layers=True)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(16, 6, 5)), jnp.float32)}
    grads = [_grads(k, {"w": (16, 6, 5)}) for k in range(4)]

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    single, state = params, tx.init(params)
    for g in grads:
        single, state = jax.jit(step)(single, state, g)

    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    local_state = tx.init(params)
    specs = jax.tree.map(
        lambda x: P("x") if jnp.ndim(x) and x.shape[0] == 16 else P(), local_state
    )
    mapped = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P("x"), specs, P("x")),
            out_specs=(P("x"), specs),
        )
    )
    sharded, state = params, local_state
    for g in grads:
        sharded, state = mapped(sharded, state, g)
    assert float(jnp.max(jnp.abs(single["w"] - params["w"]))) > 1e-3
    np.testing.assert_allclose(sharded["w"], single["w"], rtol=1e-5, atol=1e-6)
