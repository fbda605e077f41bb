"""log_step: gating, values, transparency, and the transforms that break naive logs."""

import functools
import logging
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import jaxopt_rules as jr


def _params():
    return {
        "a": {"w": jnp.arange(6.0).reshape(2, 3) / 10},
        "b": jnp.array([1.0, -2.0]),
    }


def _grads(k):
    return jax.tree.map(lambda p: jnp.cos(p * (k + 1)), _params())


def _norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in tree)))


def _train(tx, steps, params=None):
    params = _params() if params is None else params
    state = tx.init(params)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s, u))(
            *tx.update(g, s, p)
        )
    )
    history = []
    for k in range(steps):
        new_params, state, updates = step(params, state, _grads(k))
        history.append((params, _grads(k), updates))
        params = new_params
    return params, state, history


def test_fires_every_n_steps_with_values_of_an_eager_numpy_computation():
    records = []
    with jr.log_step(jr.adam(0.1), every=3, sinks=[records.append]) as tx:
        _, _, history = _train(tx, 7)
    assert [r["step"] for r in records] == [0, 3, 6]
    for record in records:
        params, grads, updates = history[record["step"]]
        g = [np.asarray(x) for x in jax.tree.leaves(grads)]
        u = [np.asarray(x) for x in jax.tree.leaves(updates)]
        p = [np.asarray(x) for x in jax.tree.leaves(params)]
        np.testing.assert_allclose(record["grad_norm"], _norm(g), rtol=1e-6)
        np.testing.assert_allclose(record["update_norm"], _norm(u), rtol=1e-6)
        np.testing.assert_allclose(record["param_norm"], _norm(p), rtol=1e-6)
        np.testing.assert_allclose(
            record["update_param_ratio"], _norm(u) / _norm(p), rtol=1e-6
        )
        assert record["nonfinite"] == []


@pytest.mark.parametrize(
    "inner",
    [
        lambda: jr.adam(0.1),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1)),
    ],
    ids=["jr.adam", "optax.chain"],
)
def test_updates_and_inner_state_are_bit_identical(inner):
    logged_params, logged_state, _ = _train(
        jr.log_step(inner(), every=2, sinks=[lambda r: None]), 5
    )
    plain_params, plain_state, _ = _train(inner(), 5)
    for a, b in zip(
        jax.tree.leaves((logged_params, logged_state.inner)),
        jax.tree.leaves((plain_params, plain_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(logged_state.count) == 5


def test_names_the_leaves_that_hold_non_finite_values():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[records.append])
    params = _params()
    grads = {"a": {"w": jnp.ones((2, 3))}, "b": jnp.array([jnp.nan, 1.0])}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    tx.flush()
    assert records[0]["nonfinite"] == ["b"]
    assert np.isnan(records[0]["grad_norm"])
    assert np.isnan(np.asarray(updates["b"][0]))  # the step itself still returns


def test_nonfinite_flags_infinities_but_not_finite_values_whose_squares_overflow():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[records.append])
    grads = {
        "huge": jnp.array([1e30, -3e38]),  # finite; the sum of squares is inf
        "neg_inf": jnp.array([1.0, -jnp.inf]),
        "pos_inf": jnp.array([jnp.inf, 2.0]),
        "fine": jnp.array([1.0, 2.0]),
    }
    jax.jit(tx.update)(grads, tx.init(grads), grads)
    tx.flush()
    assert records[0]["nonfinite"] == ["neg_inf", "pos_inf"]


def test_vmap_over_states_is_one_callback_per_fired_step():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=2, sinks=[records.append])
    params = _params()
    population = jax.vmap(lambda s: jax.tree.map(lambda x: x * s, params))(
        jnp.arange(1.0, 5.0)
    )
    states = jax.vmap(tx.init)(population)
    update = jax.jit(jax.vmap(tx.update))
    hlo = update.lower(population, states, population).as_text()
    assert hlo.count("callback") <= 2  # one call site, not one per member
    for _ in range(3):
        _, states = update(population, states, population)
    tx.flush()
    assert [(r["step"], r["batch_index"]) for r in records] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (2, 1), (2, 2), (2, 3)
    ]  # fmt: skip
    np.testing.assert_allclose(
        [r["grad_norm"] for r in records[:4]],
        [s * _norm(jax.tree.leaves(params)) for s in range(1, 5)],
        rtol=1e-6,
    )


def test_nested_vmap_gives_two_dimensional_batch_indices():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[records.append])
    params = {"w": jnp.ones((2, 3, 4))}
    states = jax.vmap(jax.vmap(tx.init))(params)
    jax.jit(jax.vmap(jax.vmap(tx.update)))(params, states, params)
    tx.flush()
    assert sorted(r["batch_index"] for r in records) == [
        [i, j] for i in range(2) for j in range(3)
    ]


def test_scan_over_steps_gives_one_record_per_fired_step():
    records = []
    tx = jr.log_step(jr.adam(0.1), every=4, sinks=[records.append])
    params = _params()

    def body(carry, k):
        p, s = carry
        u, s = tx.update(jax.tree.map(lambda x: jnp.sin(x + k), p), s, p)
        return (optax.apply_updates(p, u), s), None

    jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(10.0))[0])(
        (params, tx.init(params))
    )
    tx.flush()
    assert [r["step"] for r in records] == [0, 4, 8]


def test_grad_through_update():
    records = []
    tx = jr.log_step(jr.sgd(0.1, momentum=0.9), every=1, sinks=[records.append])
    params = _params()
    state = tx.init(params)

    def meta_loss(grads):
        updates, _ = tx.update(grads, state, params)
        return sum(jnp.sum(u**2) for u in jax.tree.leaves(updates))

    meta_grad = jax.jit(jax.grad(meta_loss))(_grads(0))
    expected = jax.tree.map(lambda g: 2 * 0.01 * g, _grads(0))
    for a, b in zip(jax.tree.leaves(meta_grad), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    tx.flush()
    assert len(records) == 1


def test_learning_rate_from_inject_hyperparams_and_custom_statistics():
    records = []
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.25)

    def max_abs_update(grads, updates, params, state):
        return jnp.max(
            jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(updates)])
        )

    tx = jr.log_step(
        inner,
        every=1,
        per_leaf=True,
        custom={"max_abs_update": max_abs_update},
        sinks=[records.append],
    )
    params = _params()
    jax.jit(tx.update)(_grads(0), tx.init(params), params)
    tx.flush()
    record = records[0]
    assert record["learning_rate"] == 0.25
    leaves = [np.asarray(x) for x in jax.tree.leaves(_grads(0))]
    np.testing.assert_allclose(
        record["max_abs_update"], 0.25 * max(np.abs(x).max() for x in leaves), rtol=1e-6
    )
    np.testing.assert_allclose(record["grad_norm/a/w"], _norm(leaves[:1]), rtol=1e-6)
    np.testing.assert_allclose(record["grad_norm/b"], _norm(leaves[1:]), rtol=1e-6)


def test_a_raising_sink_does_not_fail_the_step(caplog):
    def broken(record):
        raise OSError("no space left")

    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[broken])
    with caplog.at_level(logging.ERROR, logger="jaxopt_rules"):
        _, state, _ = _train(tx, 3)
        tx.close()
    assert int(state.count) == 3
    assert "no space left" in caplog.text


def test_sharded_jit_gives_one_record_with_global_values():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[records.append])
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("x"))
    params = {"w": jax.device_put(jnp.arange(16.0), sharding)}
    jax.jit(tx.update)(params, tx.init(params), params)
    tx.flush()
    assert len(records) == 1
    np.testing.assert_allclose(records[0]["grad_norm"], _norm([np.arange(16.0)]))


def test_shard_map_with_axis_name_gives_one_record_with_global_values():
    records = []
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[records.append], axis_name="x")
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = PartitionSpec("x")

    @functools.partial(
        jax.shard_map,
        mesh=mesh,
        in_specs=(spec, PartitionSpec()),
        out_specs=spec,
    )
    def step(params, count):
        inner_state = tx.init(params)
        inner_state = inner_state._replace(count=count)
        updates, _ = tx.update(params, inner_state, params)
        return updates

    params = jax.device_put(jnp.arange(16.0), NamedSharding(mesh, spec))
    jax.jit(step)(params, jnp.zeros([], jnp.int32))
    tx.flush()
    assert len(records) == 1
    np.testing.assert_allclose(records[0]["grad_norm"], _norm([np.arange(16.0)]))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="every must be a positive integer"):
        jr.log_step(jr.sgd(0.1), every=0)
    with pytest.raises(ValueError, match="unknown statistics"):
        jr.log_step(jr.sgd(0.1), stats=["grad_nrom"])
    tx = jr.log_step(jr.sgd(0.1))
    with pytest.raises(TypeError, match="expected the LogStepState"):
        tx.update(_params(), jr.sgd(0.1).init(_params()))
    tx.close()


def test_statistics_are_computed_only_on_the_steps_that_report():
    evaluated = []

    def probe(grads, updates, params, state):
        jax.debug.callback(lambda: evaluated.append(1))
        return jnp.zeros(())

    tx = jr.log_step(jr.sgd(0.1), every=3, custom={"probe": probe}, sinks=[])
    _train(tx, 7)
    tx.flush()
    assert len(evaluated) == 3  # steps 0, 3 and 6


@pytest.mark.parametrize("every", [1, 100])
def test_reading_the_parameters_does_not_copy_them(every):
    # The parameter norm reads the donated parameters that the step then
    # overwrites in place; the step waits for the norm instead of copying.
    tx = jr.log_step(
        jr.adam(1e-3), every=every, stats=("grad_norm", "param_norm", "nonfinite")
    )
    params = {"w": jnp.ones((256, 1024))}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, tx.init(params), params)
        .compile()
    )
    param_bytes = 256 * 1024 * 4
    assert compiled.memory_analysis().temp_size_in_bytes < param_bytes
    tx.close()


# --- optax.MultiSteps and optax.apply_if_finite, log_step around or inside ---


def _run_steps(tx, grads_seq, params):
    """Runs the jitted update over ``grads_seq``; returns each step's updates."""
    state = tx.init(params)
    update = jax.jit(tx.update)
    returned = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        returned.append(updates)
    return returned, state


def _micro_grads(n):
    return [{"w": jnp.array([1.0, -2.0, 0.5]) * (k + 1)} for k in range(n)]


def test_log_step_around_multisteps_reports_each_applied_update_once():
    records = []
    tx = jr.log_step(
        optax.MultiSteps(optax.sgd(0.1), every_k_schedule=3),
        every=1,
        sinks=[records.append],
    )
    grads = _micro_grads(6)
    returned, state = _run_steps(tx, grads, {"w": jnp.ones(3)})
    tx.flush()
    # Calls 2 and 5 emit the averaged update; the others return zeros.
    assert [(r["step"], r["applied"], r["micro_steps"]) for r in records] == [
        (0, True, 3),
        (1, True, 3),
    ]
    for record, call in zip(records, [2, 5], strict=True):
        np.testing.assert_allclose(
            record["update_norm"], _norm([np.asarray(returned[call]["w"])]), rtol=1e-6
        )
        # grad_norm: the micro-batch gradient handed to log_step on that call.
        np.testing.assert_allclose(
            record["grad_norm"], _norm([np.asarray(grads[call]["w"])]), rtol=1e-6
        )
    assert int(state.count) == 2  # applied updates


def test_log_step_inside_multisteps_reports_only_the_kept_micro_step():
    records = []
    tx = optax.MultiSteps(
        jr.log_step(optax.sgd(0.1), every=1, sinks=[records.append]),
        every_k_schedule=3,
    )
    grads = _micro_grads(6)
    returned, _ = _run_steps(tx, grads, {"w": jnp.ones(3)})
    jax.effects_barrier()
    tx.inner_opt.flush()
    assert [(r["step"], r["applied"], r["micro_steps"]) for r in records] == [
        (0, True, 3),
        (1, True, 3),
    ]
    for record, first in zip(records, [0, 3], strict=True):
        mean = np.mean([np.asarray(g["w"]) for g in grads[first : first + 3]], axis=0)
        np.testing.assert_allclose(record["grad_norm"], _norm([mean]), rtol=1e-5)
        np.testing.assert_allclose(
            record["update_norm"],
            _norm([np.asarray(returned[first + 2]["w"])]),
            rtol=1e-5,
        )


def test_every_counts_applied_updates_around_multisteps():
    records = []
    tx = jr.log_step(
        optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2),
        every=2,
        sinks=[records.append],
    )
    _run_steps(tx, _micro_grads(8), {"w": jnp.ones(3)})
    tx.flush()
    assert [r["step"] for r in records] == [0, 2]  # of the 4 applied updates


_OK = {"w": jnp.array([1.0, 2.0])}
_BAD = {"w": jnp.array([jnp.nan, 2.0])}


def test_log_step_around_apply_if_finite_reports_skipped_steps_as_not_applied():
    records = []
    tx = jr.log_step(
        optax.apply_if_finite(optax.adam(0.1), max_consecutive_errors=2),
        every=1,
        sinks=[records.append],
    )
    returned, state = _run_steps(
        tx, [_OK, _BAD, _OK, _BAD, _BAD, _BAD, _OK], {"w": jnp.ones(2)}
    )
    tx.flush()
    # The third NaN in a row exceeds max_consecutive_errors=2: optax applies it.
    assert [(r["step"], r["applied"], r["nonfinite"]) for r in records] == [
        (0, True, []),
        (1, False, ["w"]),
        (1, True, []),
        (2, False, ["w"]),
        (2, False, ["w"]),
        (2, True, ["w"]),
        (3, True, []),
    ]
    assert records[1]["update_norm"] == 0.0
    assert np.all(np.asarray(returned[1]["w"]) == 0)
    assert int(state.count) == 4


def test_skipped_steps_are_reported_even_between_every():
    records = []
    tx = jr.log_step(
        optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=5),
        every=100,
        sinks=[records.append],
    )
    _run_steps(tx, [_OK, _OK, _BAD, _OK], {"w": jnp.ones(2)})
    tx.flush()
    assert [(r["step"], r["applied"]) for r in records] == [(0, True), (2, False)]


def test_log_step_inside_apply_if_finite_reports_only_applied_updates():
    records = []
    logged = jr.log_step(optax.adam(0.1), every=1, sinks=[records.append])
    tx = optax.apply_if_finite(logged, max_consecutive_errors=1)
    _run_steps(tx, [_OK, _BAD, _OK, _BAD, _BAD], {"w": jnp.ones(2)})
    logged.flush()
    assert [(r["step"], r["applied"], r["nonfinite"]) for r in records] == [
        (0, True, []),
        (1, True, []),
        (2, True, ["w"]),  # the second NaN in a row: applied by optax
    ]


def test_log_step_inside_apply_if_finite_under_vmap_skips_rejected_members():
    # Under vmap apply_if_finite's cond becomes a select: both branches run.
    records = []
    logged = jr.log_step(optax.sgd(0.1), every=1, sinks=[records.append])
    tx = optax.apply_if_finite(logged, max_consecutive_errors=3)
    params = {"w": jnp.ones((2, 2))}
    grads = {"w": jnp.array([[1.0, 2.0], [jnp.nan, 2.0]])}
    states = jax.vmap(tx.init)(params)
    jax.jit(jax.vmap(tx.update))(grads, states, params)
    logged.flush()
    assert [(r["batch_index"], r["applied"]) for r in records] == [(0, True)]


# --- nonfinite, zero-size leaves, sinks' copies, custom statistics ---


@pytest.mark.parametrize("size", [4096, 10_000, 1_000_000])
def test_nonfinite_names_nan_and_inf_anywhere_in_large_leaves(size):
    positions = [0, 1, 7, size // 2, size - 2, size - 1]
    grads = {"clean": jnp.ones(size)}
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        for position in positions:
            leaf = np.ones(size, np.float32)
            leaf[position] = bad
            grads[f"{bad}@{position}"] = jnp.asarray(leaf)
    records = []
    tx = jr.log_step(optax.sgd(0.1), every=1, sinks=[records.append])
    jax.jit(tx.update)(grads, tx.init(grads), grads)
    tx.flush()
    expected = sorted(name for name in grads if name != "clean")
    assert sorted(records[0]["nonfinite"]) == expected


def test_zero_size_leaves_have_zero_norms():
    records = []
    tx = jr.log_step(
        jr.adam(0.1),
        every=1,
        per_leaf=True,
        sinks=[records.append],
    )
    params = {"empty": jnp.zeros((0, 3)), "w": jnp.array([3.0, 4.0])}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    tx.flush()
    assert updates["empty"].shape == (0, 3)
    record = records[0]
    assert record["grad_norm/empty"] == 0.0
    assert record["grad_norm/w"] == 5.0
    assert record["grad_norm"] == 5.0
    assert record["nonfinite"] == []


def test_each_sink_gets_its_own_copy_of_the_record():
    seen = []

    def greedy(record):
        record.pop("grad_norm")
        record["nonfinite"].append("mine")

    tx = jr.log_step(optax.sgd(0.1), every=1, sinks=[greedy, seen.append])
    params = {"w": jnp.ones(4)}
    jax.jit(tx.update)(params, tx.init(params), params)
    tx.close()
    assert seen[0]["grad_norm"] == 2.0
    assert seen[0]["nonfinite"] == []


@pytest.mark.parametrize(
    "name", ["grad_norm", "nonfinite", "step", "learning_rate", "grad_norm/w"]
)
def test_a_custom_statistic_named_like_a_built_in_is_refused(name):
    with pytest.raises(
        ValueError, match=re.escape(f"statistic {name!r} is named like")
    ):
        jr.log_step(optax.sgd(0.1), custom={name: lambda g, u, p, s: 0.0})


def test_a_custom_statistic_returning_a_vector_is_named():
    tx = jr.log_step(
        optax.sgd(0.1),
        every=1,
        custom={"abs_w": lambda g, u, p, s: jnp.abs(g["w"])},
        sinks=[lambda r: None],
    )
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"'abs_w' must return a scalar.*\(3,\)"):
        jax.jit(tx.update)(params, tx.init(params), params)
    tx.close()


# --- records: leaf paths, the owner of the delivery thread, the statistics table ---


class _Pair(NamedTuple):
    first: jax.Array
    second: jax.Array


def test_leaf_paths_join_keys_indices_and_attributes_with_slashes():
    records = []
    tx = jr.log_step(optax.sgd(0.1), every=1, per_leaf=True, sinks=[records.append])
    grads = {
        "enc": [jnp.ones(2), jnp.array([jnp.nan])],
        "head": _Pair(jnp.array([3.0, 4.0]), jnp.array([jnp.inf])),
    }
    jax.jit(tx.update)(grads, tx.init(grads), grads)
    tx.close()
    (record,) = records
    assert record["nonfinite"] == ["enc/1", "head/second"]
    assert record["grad_norm/head/first"] == 5.0
    assert record["grad_norm/enc/0"] == np.float32(np.sqrt(2.0))
    assert sorted(k for k in record if k.startswith("grad_norm/")) == [
        "grad_norm/enc/0", "grad_norm/enc/1", "grad_norm/head/first",
        "grad_norm/head/second",
    ]  # fmt: skip


def test_leaves_whose_paths_would_share_a_key_are_named():
    tx = jr.log_step(optax.sgd(0.1), every=1, per_leaf=True, sinks=[lambda r: None])
    grads = {"a/b": jnp.ones(2), "a": {"b": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"\['a'\]\['b'\].*\['a/b'\].*'a/b'"):
        jax.jit(tx.update)(grads, tx.init(grads), grads)
    tx.close()


def test_a_custom_statistic_named_with_the_path_separator_is_refused():
    with pytest.raises(ValueError, match=r"'max/abs'.*'/'"):
        jr.log_step(optax.sgd(0.1), custom={"max/abs": lambda g, u, p, s: 0.0})


def test_the_delivery_thread_belongs_to_the_update_function_not_an_added_attribute():
    records = []
    tx = jr.log_step(optax.sgd(0.1), every=1, sinks=[records.append])
    assert vars(tx) == {}  # a plain (init, update) pair, nothing attached
    # A copy of the transform (optax rebuilds NamedTuples freely) still owns it.
    copy = tx._replace()
    params = {"w": jnp.ones(3)}
    jax.jit(copy.update)(params, copy.init(params), params)
    copy.flush()
    assert [r["step"] for r in records] == [0]
    copy.close()
    assert tx.dispatcher.closed


def test_a_statistic_is_one_entry_of_the_table(monkeypatch):
    from jaxopt_rules.logging import _statistics

    entry = _statistics.Statistic(
        needs=frozenset({"updates"}), value=lambda t: 2.0 * jnp.sqrt(t.update_sq)
    )
    monkeypatch.setitem(_statistics.STATISTICS, "twice_update_norm", entry)
    records = []
    tx = jr.log_step(
        optax.sgd(0.5),
        every=1,
        stats=("grad_norm", "twice_update_norm"),
        sinks=[records.append],
    )
    params = {"w": jnp.array([3.0, 4.0])}
    jax.jit(tx.update)(params, tx.init(params), params)
    tx.close()
    assert records[0]["grad_norm"] == 5.0
    assert records[0]["twice_update_norm"] == 5.0
