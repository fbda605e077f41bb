"""quantized_state in real frameworks: flax NNX optimizers, flax serialization."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules.quantized import is_quantized


flax = pytest.importorskip("flax")
from flax import nnx, serialization  # noqa: E402
from flax.training import train_state  # noqa: E402


def _nnx_loss(model: nnx.Module, x: jax.Array) -> jax.Array:
    return jnp.mean((model(x) - 1.0) ** 2)  # type: ignore[operator]


@pytest.mark.parametrize("bits", [8, 4])
def test_nnx_optimizer_keeps_quantized_state_and_matches_a_plain_run(bits):
    """Several updates through nnx.Optimizer equal the same updates by hand."""
    tx = jr.quantized_state(jr.adam(1e-2), bits=bits, min_size=1024)
    x = jax.random.normal(jax.random.key(0), (8, 64))
    model = nnx.Linear(64, 128, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(4):
        optimizer.update(model, nnx.grad(_nnx_loss)(model, x))

    plain = nnx.Linear(64, 128, rngs=nnx.Rngs(0))
    params = nnx.as_pure(nnx.state(plain, nnx.Param))
    state = tx.init(params)
    assert is_quantized(state.inner.mu["kernel"])
    for _ in range(4):
        grads = nnx.as_pure(nnx.state(nnx.grad(_nnx_loss)(plain, x), nnx.Param))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        nnx.update(plain, params)

    np.testing.assert_array_equal(
        np.asarray(model.kernel[...]), np.asarray(plain.kernel[...])
    )
    np.testing.assert_array_equal(
        np.asarray(model.bias[...]), np.asarray(plain.bias[...])
    )
    kept = nnx.as_pure(optimizer.opt_state).inner.mu["kernel"]
    np.testing.assert_array_equal(
        np.asarray(kept["codes"]), np.asarray(state.inner.mu["kernel"].codes)
    )


def test_plain_mappings_in_place_of_quantized_arrays_are_rebuilt():
    """Any framework that turns each QuantizedArray into {codes, scales}."""
    tx = jr.quantized_state(jr.adam(1e-2), min_size=1024)
    params = {"w": jnp.ones((64, 64))}
    grads = {"w": jnp.full((64, 64), 0.5)}
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    plain = jax.tree.map(
        lambda q: {"codes": q.codes, "scales": q.scales} if is_quantized(q) else q,
        state,
        is_leaf=is_quantized,
    )
    want, _ = tx.update(grads, state, params)
    got, _ = tx.update(grads, plain, params)
    got_no_params, _ = tx.update(grads, plain)
    np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(want["w"]))
    np.testing.assert_array_equal(np.asarray(got_no_params["w"]), np.asarray(want["w"]))
    wrong = jax.tree.map(lambda x: x, plain)
    wrong.inner.mu["w"]["codes"] = wrong.inner.mu["w"]["codes"][:3]
    with pytest.raises(ValueError, match=r"codes at .*'w'.* has shape"):
        tx.update(grads, wrong, params)


def _steps(tx, params, state, n):
    target = jnp.linspace(-1.0, 1.0, params["w"].size).reshape(params["w"].shape)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(n):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("bits", [8, 4])
def test_flax_bytes_round_trip_continues_bit_identically(bits):
    tx = jr.quantized_state(jr.adamw(1e-2), bits=bits, min_size=1024)
    params = {"w": jnp.zeros((64, 48)), "b": jnp.zeros((8,))}
    straight, straight_state = _steps(tx, params, tx.init(params), 6)
    half, half_state = _steps(tx, params, tx.init(params), 3)
    data = serialization.to_bytes((half, half_state))
    restored = serialization.from_bytes((params, tx.init(params)), data)
    assert is_quantized(restored[1].inner.mu["w"])
    resumed, resumed_state = _steps(tx, *restored, 3)
    for a, b in zip(
        jax.tree.leaves((straight, straight_state)),
        jax.tree.leaves((resumed, resumed_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flax_restore_into_another_layout_names_the_leaf():
    params = {"w": jnp.zeros((64, 64))}
    data = serialization.to_bytes(
        jr.quantized_state(jr.adam(1e-3), bits=8).init(params)
    )
    target = jr.quantized_state(jr.adam(1e-3), bits=4).init(params)
    with pytest.raises(ValueError, match=r"codes at .*mu/w.* has shape"):
        serialization.from_bytes(target, data)


def test_linen_train_state_checkpoint_round_trip():
    import flax.linen as nn

    model = nn.Dense(96)
    x = jnp.ones((4, 64))
    params = model.init(jax.random.key(0), x)
    tx = jr.quantized_state(jr.adam(1e-2), min_size=1024)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state):
        grads = jax.grad(lambda p: jnp.mean(state.apply_fn(p, x) ** 2))(state.params)
        return state.apply_gradients(grads=grads)

    for _ in range(2):
        state = train_step(state)
    data = serialization.to_bytes(state)
    fresh = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    restored = serialization.from_bytes(fresh, data)
    assert int(restored.step) == 2
    a, b = train_step(state), train_step(restored)
    for x1, x2 in zip(
        jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))


IMPORT_ORDER = textwrap.dedent(
    """
    import sys
    {first}
    {second}
    assert {flax_loaded} == ("flax" in sys.modules), sorted(sys.modules)[:0]
    import jax.numpy as jnp
    import jaxopt_rules as jr
    tx = jr.quantized_state(jr.adam(1e-3))
    state = tx.init({{"w": jnp.ones((64, 64))}})
    {late}
    from flax import serialization
    back = serialization.from_bytes(state, serialization.to_bytes(state))
    assert (back.inner.mu["w"].codes == state.inner.mu["w"].codes).all()
    print("ok")
    """
)


@pytest.mark.parametrize(
    ("first", "second", "flax_loaded", "late"),
    [
        ("import flax.serialization", "import jaxopt_rules", True, ""),
        ("import jaxopt_rules", "import flax", True, ""),
        ("import jaxopt_rules", "", False, "import flax"),
    ],
    ids=["flax-first", "flax-second", "flax-after-init"],
)
def test_flax_registration_whatever_the_import_order(first, second, flax_loaded, late):
    """jaxopt_rules never imports flax itself; flax finds QuantizedArray anyway."""
    code = IMPORT_ORDER.format(
        first=first, second=second, flax_loaded=flax_loaded, late=late
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
