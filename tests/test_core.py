"""The rule core's contract, checked on small rules with hand-computed results."""

import inspect
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import build

import jaxopt_rules as jr
from jaxopt_rules._core import safe_increment
from jaxopt_rules.testing import with_update_args


@jr.rule
def plain(grad, *, learning_rate):
    return -learning_rate * grad


@jr.rule(slots={"velocity": jr.Slot(dtype_arg="velocity_dtype")})
def heavy_ball(grad, velocity, *, learning_rate, beta=0.9):
    velocity = beta * velocity + grad
    return -learning_rate * velocity, velocity


def test_seed_sgd_example():
    """The issue's worked example: one step of SGD with momentum."""
    params = [jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])]
    grads = [jnp.array([0.1, 0.1]), jnp.array([0.2, 0.2])]
    tx = jr.sgd(learning_rate=0.05, momentum=0.9)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new[0], [0.995, 1.995], rtol=1e-7)
    np.testing.assert_allclose(new[1], [2.99, 3.99], rtol=1e-7)


def test_transform_type_and_state_fields():
    tx = jr.adam(1e-3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init({"w": jnp.zeros(3)})
    assert type(state).__name__ == "AdamState"
    assert state._fields == ("count", "mu", "nu")
    assert state.count.dtype == jnp.int32
    assert state.count.shape == ()
    assert optax.tree.get(state, "nu")["w"].shape == (3,)


def test_absent_slot_changes_state_class():
    assert jr.sgd(0.1).init(jnp.zeros(2))._fields == ("count",)
    assert jr.sgd(0.1, momentum=0.0).init(jnp.zeros(2))._fields == ("count", "trace")
    rms = jr.rmsprop(0.1, centered=True).init(jnp.zeros(2))
    assert rms._fields == ("count", "nu", "mu")


def test_count_saturates():
    largest = jnp.iinfo(jnp.int32).max
    assert int(safe_increment(jnp.asarray(largest - 1, jnp.int32))) == largest
    assert int(safe_increment(jnp.asarray(largest, jnp.int32))) == largest
    tx = heavy_ball(0.1)
    state = tx.init(jnp.zeros(2))._replace(count=jnp.asarray(largest, jnp.int32))
    _, state = tx.update(jnp.ones(2), state)
    assert int(state.count) == largest


def test_state_pickles():
    tx = jr.rmsprop(0.1, momentum=0.9)
    state = tx.init({"w": jnp.ones(2)})
    restored = pickle.loads(pickle.dumps(state))
    assert type(restored) is type(state)
    _, a = tx.update({"w": jnp.ones(2)}, state)
    _, b = tx.update({"w": jnp.ones(2)}, restored)
    np.testing.assert_array_equal(a.trace["w"], b.trace["w"])


def test_none_and_masked_node_holes():
    params = {"a": jnp.ones(2), "frozen": None, "b": optax.MaskedNode()}
    tx = heavy_ball(0.5)
    state = tx.init(params)
    assert state.velocity["frozen"] is None
    assert isinstance(state.velocity["b"], optax.MaskedNode)
    grads = {"a": jnp.full(2, 2.0), "frozen": None, "b": optax.MaskedNode()}
    updates, _ = tx.update(grads, state)
    np.testing.assert_allclose(updates["a"], [-1.0, -1.0])
    assert updates["frozen"] is None


def test_schedule_evaluated_at_count_before_increment():
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1 * (count + 1)

    tx = plain(schedule)
    state = tx.init(jnp.zeros(1))
    lrs = []
    for _ in range(3):
        updates, state = tx.update(jnp.ones(1), state)
        lrs.append(-float(updates[0]))
    np.testing.assert_allclose(lrs, [0.1, 0.2, 0.3], rtol=1e-6)


def test_any_numeric_hyperparameter_may_be_a_schedule():
    tx = heavy_ball(1.0, beta=lambda count: jnp.where(count == 0, 0.0, 0.5))
    state = tx.init(jnp.zeros(1))
    u1, state = tx.update(jnp.ones(1), state)
    u2, state = tx.update(jnp.ones(1), state)
    np.testing.assert_allclose([u1[0], u2[0]], [-1.0, -1.5])


@pytest.mark.parametrize("grad_dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_updates_come_back_in_the_gradient_dtype(grad_dtype):
    params = jnp.ones(4, grad_dtype)
    tx = jr.adam(1e-2)
    updates, state = jax.jit(tx.update)(jnp.full(4, 0.5, grad_dtype), tx.init(params))
    assert updates.dtype == grad_dtype
    assert state.mu.dtype == grad_dtype
    # Squares of float16 gradients are kept in float32 (float16 underflows).
    assert state.nu.dtype == (jnp.float32 if grad_dtype == jnp.float16 else grad_dtype)


def test_arithmetic_in_float32_for_low_precision():
    """bf16 gradients are computed in float32, rounded once at the end."""
    g32 = jnp.array([1e-3, 3e-3, -7e-3], jnp.float32)
    g16 = g32.astype(jnp.bfloat16)
    tx = jr.adam(1e-2)
    u16, _ = tx.update(g16, tx.init(g16))
    u_ref, _ = tx.update(g16.astype(jnp.float32), tx.init(g16.astype(jnp.float32)))
    np.testing.assert_array_equal(
        np.asarray(u16), np.asarray(u_ref.astype(jnp.bfloat16))
    )


def test_per_slot_storage_dtypes():
    params = {"w": jnp.ones(3, jnp.float32)}
    tx = jr.adam(1e-2, mu_dtype="float16", nu_dtype=jnp.bfloat16)
    state = tx.init(params)
    assert state.mu["w"].dtype == jnp.float16
    assert state.nu["w"].dtype == jnp.bfloat16
    updates, state = jax.jit(tx.update)({"w": jnp.full(3, 0.1)}, state)
    assert updates["w"].dtype == jnp.float32
    assert state.mu["w"].dtype == jnp.float16
    assert state.nu["w"].dtype == jnp.bfloat16
    assert (
        jr.sgd(0.1, momentum=0.9, accumulator_dtype="bfloat16")
        .init(params)
        .trace["w"]
        .dtype
        == jnp.bfloat16
    )


def test_no_float64_under_x64():
    with jax.enable_x64(True):
        params = {"w": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
        for spec in jr.REGISTRY:
            tx = with_update_args(
                build(spec.factory, **spec.hyperparams), spec.update_args
            )
            state = tx.init(params)
            updates, state = jax.jit(tx.update)(params, state, params)
            for leaf in jax.tree.leaves((updates, state)):
                assert leaf.dtype != jnp.float64, spec.name


def test_mixed_precision_tree_under_x64():
    with jax.enable_x64(True):
        params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
        tx = jr.adam(1e-2)
        updates, state = jax.jit(tx.update)(params, tx.init(params))
        assert updates["a"].dtype == jnp.float32
        assert updates["b"].dtype == jnp.float64
        assert state.nu["a"].dtype == jnp.float32
        assert state.nu["b"].dtype == jnp.float64


def test_slots_may_share_a_dtype_argument():
    both = jr.Slot(dtype_arg="moments_dtype")

    @jr.rule(slots={"m": both, "v": both})
    def two_moments(grad, m, v, *, learning_rate):
        return -learning_rate * grad, grad, grad * grad

    params = jnp.ones(3)
    assert list(inspect.signature(two_moments).parameters).count("moments_dtype") == 1
    assert two_moments.static_args.count("moments_dtype") == 1
    state = two_moments(0.1, moments_dtype=jnp.bfloat16).init(params)
    assert state.m.dtype == state.v.dtype == jnp.bfloat16
    state = two_moments(0.1).init(params)
    assert state.m.dtype == state.v.dtype == jnp.float32


def test_a_slot_copied_from_the_params_is_its_own_buffer():
    """Params and state can be donated together (``donate_argnums=(0, 1)``)."""
    tx = jr.cocob()  # init_particles: the initial parameters
    params = {"w": jnp.arange(4.0)}
    state = tx.init(params)
    assert (
        state.init_particles["w"].unsafe_buffer_pointer()
        != params["w"].unsafe_buffer_pointer()
    )

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    donated = jax.jit(step, donate_argnums=(0, 1))
    params, state = donated(params, state, {"w": jnp.ones(4)})
    np.testing.assert_array_equal(state.init_particles["w"], jnp.arange(4.0))


def test_slot_init_from_hyperparameter_and_callable():
    acc = jr.adagrad(0.1, initial_accumulator_value=0.25).init(jnp.zeros(2))
    np.testing.assert_array_equal(acc.sum_of_squares, [0.25, 0.25])

    @jr.rule(slots={"anchor": jr.Slot(init=lambda p: p)})
    def pull_to_start(grad, anchor, param, *, learning_rate, strength=1.0):
        return -learning_rate * (grad + strength * (param - anchor)), anchor

    params = jnp.array([1.0, 2.0])
    tx = pull_to_start(0.5)
    state = tx.init(params)
    np.testing.assert_array_equal(state.anchor, params)
    updates, _ = tx.update(jnp.zeros(2), state, params + 1.0)
    np.testing.assert_allclose(updates, [-0.5, -0.5])


def test_slot_with_its_own_shape():
    """A factored second moment (row and column means), as in Adafactor."""

    @jr.rule(
        slots={
            "row": jr.Slot(shape=lambda s: s[:-1]),
            "col": jr.Slot(shape=lambda s: s[-1:]),
        }
    )
    def factored_rms(grad, row, col, *, learning_rate, decay=0.5):
        row = decay * row + (1 - decay) * jnp.mean(grad**2, axis=-1)
        col = decay * col + (1 - decay) * jnp.mean(grad**2, axis=0)
        v = jnp.outer(row, col) / jnp.mean(row)
        return -learning_rate * grad / jnp.sqrt(v), row, col

    g = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    tx = factored_rms(0.1)
    state = tx.init(jnp.zeros((2, 3)))
    assert state.row.shape == (2,)
    assert state.col.shape == (3,)
    updates, state = tx.update(jnp.asarray(g), state)
    row = 0.5 * (g**2).mean(axis=1)
    col = 0.5 * (g**2).mean(axis=0)
    expected = -0.1 * g / np.sqrt(np.outer(row, col) / row.mean())
    np.testing.assert_allclose(updates, expected, rtol=1e-6)
    np.testing.assert_allclose(state.row, row, rtol=1e-6)


def test_global_stats_see_every_leaf():
    grads = {"a": jnp.array([3.0]), "b": jnp.array([[4.0, 0.0]])}
    tx = jr.normalized_sgd(2.0, eps=0.0)
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(updates["a"], [-1.2], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [[-1.6, 0.0]], rtol=1e-6)


def test_per_leaf_mask_prefix_and_callable():
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    for mask in ({"w": True, "b": False}, lambda tree: {"w": True, "b": False}):
        tx = jr.lion(1.0, weight_decay=0.5, mask=mask)
        updates, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], [-0.5, -0.5])
        np.testing.assert_allclose(updates["b"], [0.0, 0.0])
    # A prefix: one boolean for a whole subtree.
    nested = {"enc": {"w": jnp.ones(2), "b": jnp.ones(1)}, "head": jnp.ones(1)}
    tx = jr.adamw(1.0, weight_decay=1.0, mask={"enc": False, "head": True})
    zero = jax.tree.map(jnp.zeros_like, nested)
    updates, _ = tx.update(zero, tx.init(nested), nested)
    np.testing.assert_allclose(updates["enc"]["w"], [0.0, 0.0])
    np.testing.assert_allclose(updates["head"], [-1.0])


def test_factory_signature_and_static_args():
    signature = inspect.signature(heavy_ball)
    assert list(signature.parameters) == [
        "learning_rate",
        "beta",
        "velocity_dtype",
        "stochastic_rounding",
        "rounding_seed",
    ]
    for name in ("velocity_dtype", "stochastic_rounding", "rounding_seed"):
        assert signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert heavy_ball.static_args == (
        "velocity_dtype",
        "stochastic_rounding",
        "rounding_seed",
    )
    assert heavy_ball(0.1, 0.5) is not None  # positional hyperparameters
    assert set(jr.adamw.static_args) == {
        "mask",
        "mu_dtype",
        "nu_dtype",
        "stochastic_rounding",
        "rounding_seed",
    }
    assert "learning_rate" in repr(heavy_ball)


def test_inject_hyperparams_helper_with_dtype_class():
    """``jr.inject_hyperparams`` keeps dtypes static (a dtype class is callable
    and plain ``optax.inject_hyperparams`` would take it for a schedule)."""
    tx = jr.inject_hyperparams(jr.adam)(learning_rate=0.1, mu_dtype=jnp.bfloat16)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert state.inner_state.mu["w"].dtype == jnp.bfloat16
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    updates, _ = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])


def test_injected_and_plain_are_bitwise_identical():
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    plain_tx = jr.adam(0.01, b2=0.99)
    injected_tx = jr.inject_hyperparams(jr.adam)(0.01, b2=0.99)
    ps, pi = plain_tx.init(params), injected_tx.init(params)
    for _ in range(20):
        grads = jax.tree.map(jnp.sin, params)
        u_plain, ps = jax.jit(plain_tx.update)(grads, ps)
        u_inj, pi = jax.jit(injected_tx.update)(grads, pi)
        np.testing.assert_array_equal(u_plain["w"], u_inj["w"])
        params = optax.apply_updates(params, u_plain)


def test_traced_hyperparameters_in_vmap():
    """Hyperparameters can be vmapped (a population of learning rates)."""

    def one(lr):
        tx = jr.sgd(lr, momentum=0.9)
        updates, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
        return updates

    out = jax.vmap(one)(jnp.array([0.1, 0.2]))
    np.testing.assert_allclose(out, [[-0.1, -0.1], [-0.2, -0.2]], rtol=1e-6)


def test_init_state_sharded_like_params_under_jit():
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    # Auto axes: the compiler picks output shardings; a plain zeros_like would
    # land on one device (optax's behaviour).
    mesh = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    sharding = NamedSharding(mesh, PartitionSpec("x", "y"))
    params = jax.device_put(jnp.arange(32.0).reshape(8, 4) - 3.0, sharding)
    state = jax.jit(jr.adagrad(0.1, initial_accumulator_value=0.5).init)(params)
    assert state.sum_of_squares.sharding.is_equivalent_to(sharding, 2)
    np.testing.assert_array_equal(state.sum_of_squares, np.full((8, 4), 0.5))
    # Exact fill even for non-finite parameters (no NaN leaks into the state).
    bad = jnp.array([jnp.inf, -jnp.inf, jnp.nan, -0.0])
    np.testing.assert_array_equal(jax.jit(jr.adam(0.1).init)(bad).mu, np.zeros(4))
    assert not np.signbit(np.asarray(jax.jit(jr.adam(0.1).init)(bad).mu)).any()


def test_static_structural_hyperparameter():
    """A structural integer (a loop count) is declared static."""

    @jr.rule(static=("n_iter",))
    def repeated_halving(grad, *, learning_rate, n_iter=3):
        for _ in range(n_iter):  # Python loop: n_iter must never be traced
            grad = 0.5 * grad
        return -learning_rate * grad

    # (No rounding arguments: a rule without state has nothing to round.)
    assert repeated_halving.static_args == ("n_iter",)
    tx = jr.inject_hyperparams(repeated_halving)(learning_rate=1.0, n_iter=2)
    params = jnp.ones(2)
    updates, _ = jax.jit(tx.update)(jnp.ones(2), tx.init(params), params)
    np.testing.assert_allclose(updates, [-0.25, -0.25])
    # Without static_args, optax traces the integer: the error says what to do.
    plain_inject = optax.inject_hyperparams(repeated_halving)(1.0, n_iter=2)
    with pytest.raises(TypeError, match=r"n_iter is structural"):
        plain_inject.init(params)
