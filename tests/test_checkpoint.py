"""Checkpoints across optimizers: ``from_optax`` / ``to_optax`` and ``restore_state``.

Conversion, for every drop-in of the catalog and every option set in its
``reference_cases``: a run of the optax optimizer converted after ``K`` steps
continues on the drop-in exactly as it would have on optax (float64, ``N``
further free-running steps, parameters within 1e-12 relative, the tolerance of
``tests/test_reference.py``), and the reverse; the conversion itself copies
every slot and count bit for bit.

Raw restore, with real orbax: a state saved with ``orbax.checkpoint`` and
restored without a target is rebuilt by name, identical to the saved one,
and continues bit-identically; plain ``jax.tree.unflatten`` swaps slots.
"""

import functools
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import DROP_INS, build, build_reference

import jaxopt_rules as jr
from jaxopt_rules import testing, torch_compat
from jaxopt_rules.checkpoint._convert import merge_masked, relayout


K, N = 5, 20  # steps before the conversion, steps after it

CASES = [
    pytest.param(spec, i, id=f"{spec.name}-{i}")
    for spec in DROP_INS
    for i in range(len(spec.reference_cases))
]
# Runs that continue on the other implementation within 1e-12, except where
# the two implementations' trajectories differ anyway (strict: the day they
# agree, the test says so).
_WARMUP = (
    "optax's warmup_constant_schedule, jitted with an int32 count, returns "
    "float32-rounded rates under float64; the drop-in computes the warm-up in "
    "the compute dtype, so the continued runs differ by 1e-10 to 2e-8 whatever "
    "the conversion (tests/test_reference.py lists the same case)"
)
_KNOWN_DIFFERENT = {
    "schedule_free_sgd-1": _WARMUP,
    "schedule_free_adamw-1": _WARMUP,
}
CONTINUED_CASES = [
    pytest.param(
        *case.values,
        id=case.id,
        marks=[pytest.mark.xfail(strict=True, reason=_KNOWN_DIFFERENT[case.id])]
        if case.id in _KNOWN_DIFFERENT
        else [],
    )
    for case in CASES
]


@functools.cache
def _stepper(tx: Any) -> Any:
    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = tx.update(testing.example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    return step


def _run(tx: Any, params: Any, state: Any, steps: int) -> tuple[Any, Any]:
    """``steps`` jitted steps of ``tx`` on the example loss."""
    step = _stepper(tx)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def _has_count(state: Any) -> bool:
    """Whether optax keeps a step count in ``state`` (found by optax itself)."""
    return bool(optax.tree_utils.tree_get_all_with_path(state, "count"))


def _assert_identical(actual: Any, expected: Any) -> None:
    if (
        hasattr(actual, "_fields")
        and type(actual) is not type(expected)
        and getattr(expected, "_fields", None) == actual._fields
    ):
        # A state the drop-in declares with optax's fields (jr.sophia's
        # estimator state, optax's HutchinsonState): compare field by field.
        for a, e in zip(actual, expected, strict=True):
            _assert_identical(a, e)
        return
    # optax's SM3 keeps a list of per-axis accumulators per leaf, jr.sm3 one
    # vector per leaf; optax's GaLore a (0, 0) projector for a leaf it does
    # not project, jr.galore one zero: compare in the layout of ``actual``.
    relaid = relayout(expected, actual)
    if jax.tree.structure(actual) != jax.tree.structure(expected):
        assert relaid is not None, (actual, expected)
    if relaid is not None:
        expected = relaid
    # optax keeps typed PRNG keys, this package their raw key data: compare bits.
    actual, expected = map(
        optax.tree_utils.tree_unwrap_random_key_data, (actual, expected)
    )
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _field(state: Any, name: str, like: Any) -> Any:
    """The one field ``name`` of the NamedTuple states inside ``state``.

    By field, not by key: a parameter may share a slot's name (the kit's
    example params have a leaf ``scale``, COCOB a slot ``scale``). The parts
    of one slot that ``optax.partition`` keeps per label (``MaskedNode``
    holes; optax.contrib.muon's two ``mu``) are merged in ``like``'s shape.
    """
    owns = lambda node: hasattr(node, "_fields") and name in node._fields
    found = [getattr(n, name) for n in jax.tree.leaves(state, is_leaf=owns) if owns(n)]
    merged = merge_masked(found, like)
    if merged is not None:
        return merged
    assert len(found) == 1, f"{len(found)} fields named {name!r} in the state"
    return found[0]


def _named_fields(state: Any) -> list[tuple[str, Any]]:
    """The state's fields after ``count``, by name; a field holding a state of
    its own (``jr.lbfgs``'s line-search state, which optax keeps as the last
    transform of a chain) is replaced by its fields."""
    out = []
    for name in state._fields[1:]:
        value = getattr(state, name)
        if hasattr(value, "_fields"):
            out.extend((n, getattr(value, n)) for n in value._fields)
        else:
            out.append((name, value))
    return out


_PAIRS: dict[tuple[str, int, str], tuple[Any, Any]] = {}


def _pair(spec: Any, case: int, dtype: Any) -> tuple[Any, Any]:
    """The rule and its reference for one case (shared, so compiled once)."""
    key = (spec.name, case, np.dtype(dtype).name)
    if key not in _PAIRS:
        kwargs = testing.reference_arguments(
            spec.factory, spec.reference_factory, spec.reference_cases[case], dtype
        )
        # Rules that read the loss get it from the example loss, both sides.
        _PAIRS[key] = tuple(
            testing.with_update_args(tx, spec.update_args)
            for tx in (build(spec.factory, **kwargs), build_reference(spec, **kwargs))
        )
    return _PAIRS[key]


# -- from_optax / to_optax over the catalog ---------------------------------


@pytest.mark.parametrize(("spec", "case"), CONTINUED_CASES)
def test_optax_run_continues_on_the_drop_in(spec, case):
    with jax.enable_x64(True):
        ours, ref = _pair(spec, case, np.float64)
        params = testing.example_params(jnp.float64)
        params, ref_state = _run(ref, params, ref.init(params), K)
        count = None if _has_count(ref_state) else K
        state = jr.from_optax(ref_state, ours, params, count=count)
        # The conversion copies: same count, every slot equal to optax's.
        assert type(state) is type(ours.init(params))
        assert int(state.count) == K
        for slot, value in _named_fields(state):
            _assert_identical(value, _field(ref_state, slot, value))
        continued, _ = _run(ours, params, state, N)
        expected, _ = _run(ref, params, ref_state, N)
        assert testing.relative_error(continued, expected) <= 1e-12


@pytest.mark.parametrize(("spec", "case"), CONTINUED_CASES)
def test_drop_in_run_continues_on_optax(spec, case):
    with jax.enable_x64(True):
        ours, ref = _pair(spec, case, np.float64)
        params = testing.example_params(jnp.float64)
        params, state = _run(ours, params, ours.init(params), K)
        ref_state = jr.to_optax(state, ref, params)
        assert jax.tree.structure(ref_state) == jax.tree.structure(ref.init(params))
        for _, count in optax.tree_utils.tree_get_all_with_path(ref_state, "count"):
            assert int(count) == K
        for slot, value in _named_fields(state):
            _assert_identical(_field(ref_state, slot, value), value)
        continued, _ = _run(ref, params, ref_state, N)
        expected, _ = _run(ours, params, state, N)
        assert testing.relative_error(continued, expected) <= 1e-12


@pytest.mark.parametrize(("spec", "case"), CASES)
def test_round_trip_through_optax_is_exact(spec, case):
    ours, ref = _pair(spec, case, np.float32)
    params = testing.example_params()
    params, state = _run(ours, params, ours.init(params), 3)
    ref_state = jr.to_optax(state, ref, params)
    count = None if _has_count(ref_state) else 3
    back = jr.from_optax(ref_state, ours, params, count=count)
    assert type(back) is type(state)
    _assert_identical(back, state)


def test_abstract_params_are_enough():
    params = testing.example_params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    ref = optax.adam(1e-2)
    _, ref_state = _run(ref, params, ref.init(params), 2)
    state = jr.from_optax(ref_state, jr.adam(1e-2), abstract)
    _assert_identical(state.nu, ref_state[0].nu)


def test_schedule_counts_convert_both_ways():
    schedule = optax.linear_schedule(1e-2, 1e-3, transition_steps=10)
    ours, ref = jr.adam(schedule), optax.adam(schedule)
    params = testing.example_params()
    params, ref_state = _run(ref, params, ref.init(params), K)
    assert isinstance(ref_state[1], optax.ScaleByScheduleState)  # two counts
    state = jr.from_optax(ref_state, ours, params)
    assert int(state.count) == K
    back = jr.to_optax(state, ref, params)
    _assert_identical(back, ref_state)
    # The schedule continues from step K on both (learning rate 1e-2 -> 1e-3).
    continued, _ = _run(ours, params, state, 10)
    expected, _ = _run(ref, params, ref_state, 10)
    assert testing.relative_error(continued, expected) <= 1e-5


def test_counts_that_disagree_are_refused():
    schedule = optax.linear_schedule(1e-2, 1e-3, transition_steps=10)
    params = testing.example_params()
    ref_state = optax.adam(schedule).init(params)
    bad = (ref_state[0]._replace(count=jnp.asarray(3)), ref_state[1])
    with pytest.raises(ValueError, match=r"different step counts.*count=3.*count=0"):
        jr.from_optax(bad, jr.adam(schedule), params)
    with pytest.raises(
        ValueError, match="count=4 differs from the source's step count 0"
    ):
        jr.from_optax(ref_state, jr.adam(schedule), params, count=4)


def test_a_missing_count_must_be_given():
    params = testing.example_params()
    with pytest.raises(ValueError, match=r"holds none .* pass count="):
        jr.from_optax(optax.sgd(0.1).init(params), jr.sgd(0.1), params)
    state = jr.from_optax(optax.sgd(0.1).init(params), jr.sgd(0.1), params, count=9)
    assert int(state.count) == 9


def test_inject_hyperparams_states_convert():
    ours = jr.inject_hyperparams(jr.adam)(learning_rate=1e-2, b1=0.8)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2, b1=0.8)
    params = testing.example_params()
    params, ref_state = _run(ref, params, ref.init(params), K)
    state = jr.from_optax(ref_state, ours, params)
    _assert_identical(state.hyperparams, ref_state.hyperparams)
    _assert_identical(state.inner_state.mu, ref_state.inner_state[0].mu)
    _assert_identical(jr.to_optax(state, ref, params), ref_state)


def test_inject_hyperparams_into_a_plain_rule_needs_ignore():
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    params = testing.example_params()
    ref_state = ref.init(params)
    with pytest.raises(
        ValueError, match=r"no field for the source's state\.hyperparams"
    ):
        jr.from_optax(ref_state, jr.adam(1e-2), params)
    state = jr.from_optax(ref_state, jr.adam(1e-2), params, ignore=("hyperparams",))
    assert type(state) is type(jr.adam(1e-2).init(params))


def test_chains_convert():
    params = testing.example_params()
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    ours = optax.chain(optax.clip_by_global_norm(1.0), jr.adamw(1e-2))
    params, ref_state = _run(ref, params, ref.init(params), K)
    state = jr.from_optax(ref_state, ours, params)
    _assert_identical(state[1].mu, ref_state[1][0].mu)
    _assert_identical(jr.to_optax(state, ref, params), ref_state)


def test_a_slot_the_source_lacks_is_named():
    params = testing.example_params()
    with pytest.raises(
        ValueError, match=r"no field 'trace' for the target's state\.trace"
    ):
        jr.from_optax(optax.adam(0.1).init(params), jr.sgd(0.1, momentum=0.9), params)


def test_a_slot_the_target_lacks_is_named():
    params = testing.example_params()
    ref_state = optax.rmsprop(0.1, momentum=0.9).init(params)
    with pytest.raises(
        ValueError, match=r"no field for the source's state\[2\]\.trace"
    ):
        jr.from_optax(ref_state, jr.rmsprop(0.1), params, count=0)
    state = jr.rmsprop(0.1, momentum=0.9).init(params)
    with pytest.raises(ValueError, match=r"no field for the source's state\.trace"):
        jr.to_optax(state, optax.rmsprop(0.1), params)


def test_other_parameters_are_refused_with_the_leaf_named():
    params = testing.example_params()
    ref_state = optax.adam(0.1).init(params)
    other = {**params, "scale": jnp.zeros(3)}
    with pytest.raises(
        ValueError, match=r"state\.mu\['scale'\]: shape \(\) in the source"
    ):
        jr.from_optax(ref_state, jr.adam(0.1), other)
    with pytest.raises(ValueError, match=r"state\.mu.*tree structure"):
        jr.from_optax(ref_state, jr.adam(0.1), {"w": jnp.zeros(3)})


def test_names_that_differ_are_mapped_with_rename():
    params = {"w": jnp.array([1.0, 2.0])}
    _, ref_state = optax.sgd(0.1, momentum=0.9).update(
        {"w": jnp.array([0.5, 0.25])}, optax.sgd(0.1, momentum=0.9).init(params)
    )
    ours = torch_compat.sgd(0.1, momentum=0.9)  # its slot is "momentum_buffer"
    state = jr.from_optax(
        ref_state, ours, params, count=1, rename={"momentum_buffer": "trace"}
    )
    np.testing.assert_array_equal(state.momentum_buffer["w"], [0.5, 0.25])
    back = jr.to_optax(
        state, optax.sgd(0.1, momentum=0.9), params, rename={"momentum_buffer": "trace"}
    )
    _assert_identical(back, ref_state)


def test_storage_dtypes_are_cast():
    params = testing.example_params()
    ref = optax.adam(1e-2)
    params, ref_state = _run(ref, params, ref.init(params), 2)
    ours = jr.adam(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    state = jr.from_optax(ref_state, ours, params)
    for leaf, ref_leaf in zip(
        jax.tree.leaves(state.nu), jax.tree.leaves(ref_state[0].nu), strict=True
    ):
        assert leaf.dtype == jnp.bfloat16
        np.testing.assert_array_equal(leaf, ref_leaf.astype(jnp.bfloat16))


def test_the_rounding_key_comes_from_init_and_is_dropped_for_optax():
    params = testing.example_params()
    ours = jr.adam(
        1e-2, nu_dtype=jnp.bfloat16, stochastic_rounding=True, rounding_seed=3
    )
    state = jr.from_optax(optax.adam(1e-2).init(params), ours, params)
    _assert_identical(state.rounding_key, ours.init(params).rounding_key)
    back = jr.to_optax(state, optax.adam(1e-2), params)
    assert jax.tree.structure(back) == jax.tree.structure(optax.adam(1e-2).init(params))


def test_quantized_states_dequantize_to_optax_and_are_not_a_target():
    params = {"w": jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64)}
    ours = jr.quantized_state(jr.adam(1e-2))
    _, state = _run(ours, params, ours.init(params), 2)
    back = jr.to_optax(state, optax.adam(1e-2), params)
    np.testing.assert_array_equal(back[0].mu["w"], state.inner.mu["w"].dequantize())
    assert int(back[0].count) == 2
    with pytest.raises(ValueError, match=r"state\.inner\.mu is quantized"):
        jr.from_optax(back, ours, params)


# -- complex parameters: optax keeps |g|^2 complex -----------------------------


class _RealNuState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def _real_nu_transform() -> optax.GradientTransformation:
    """A state layout like this package's for complex params: ``nu`` real."""

    def init(params: Any) -> _RealNuState:
        return _RealNuState(
            jnp.zeros([], jnp.int32),
            jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.real(p).dtype), params),
        )

    return optax.GradientTransformation(init, lambda u, s, p=None: (u, s))


def test_complex_second_moments_become_real_and_back():
    params = {"z": jnp.array([1 + 2j, -0.5j], jnp.complex64)}
    grads = {"z": jnp.array([0.5 - 1j, 2 + 0j], jnp.complex64)}
    ref = optax.adam(1e-2)
    _, ref_state = ref.update(grads, ref.init(params))
    assert ref_state[0].nu["z"].dtype == jnp.complex64  # optax's layout
    state = jr.from_optax(ref_state, _real_nu_transform(), params)
    assert state.nu["z"].dtype == jnp.float32
    np.testing.assert_array_equal(state.nu["z"], np.real(ref_state[0].nu["z"]))
    _assert_identical(state.mu, ref_state[0].mu)
    _assert_identical(jr.to_optax(state, ref, params), ref_state)


def test_complex_values_with_an_imaginary_part_are_refused_for_a_real_slot():
    params = {"z": jnp.array([1 + 2j], jnp.complex64)}
    ref_state = optax.adam(1e-2).init(params)
    nu = {"z": jnp.array([1 + 1j], jnp.complex64)}
    bad = (ref_state[0]._replace(nu=nu), optax.EmptyState())
    with pytest.raises(ValueError, match=r"state\.nu\['z'\]: complex values"):
        jr.from_optax(bad, _real_nu_transform(), params)


def test_jaxopt_rules_adam_on_complex_params_matches_optax_after_conversion():
    params = {"z": jnp.array([1 + 2j, -0.5j, 3.0], jnp.complex64)}

    def grads_of(p: Any) -> Any:
        return jax.tree.map(lambda z: jnp.conj(z) * 0.5 + 0.1j, p)

    ref, ours = optax.adam(1e-2), jr.adam(1e-2)
    ref_state = ref.init(params)
    for _ in range(3):
        updates, ref_state = ref.update(grads_of(params), ref_state)
        params = optax.apply_updates(params, updates)
    state = jr.from_optax(ref_state, ours, params)
    assert state.nu["z"].dtype == jnp.float32
    np.testing.assert_array_equal(state.nu["z"], np.real(ref_state[0].nu["z"]))
    back = jr.to_optax(state, ref, params)
    _assert_identical(back, ref_state)


# -- restore_state: raw checkpoints rebuilt by name ---------------------------


def _orbax_roundtrip(state: Any, directory: pathlib.Path) -> Any:
    """Saves ``state`` with orbax and restores it without a target."""
    path = directory / "state"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path)


def _msgpack_roundtrip(state: Any, directory: pathlib.Path) -> Any:
    """Saves ``state`` with flax's msgpack and restores it without a target."""
    import flax.serialization

    path = directory / "state.msgpack"
    path.write_bytes(flax.serialization.to_bytes(state))
    return flax.serialization.msgpack_restore(path.read_bytes())


# orbax refuses zero-size arrays ("Cannot save arrays with zero size"), and
# torch_compat.adafactor keeps zero-size placeholders (``variance`` of a
# factored leaf, ``row_var``/``col_var`` of a 1-d one), so its raw checkpoint
# goes through flax's msgpack instead.
SWAPPED = [
    pytest.param(
        lambda: jr.rmsprop(1e-2, centered=True, momentum=0.9),
        _orbax_roundtrip,
        id="rmsprop",
    ),
    pytest.param(
        lambda: torch_compat.adadelta(1.0), _orbax_roundtrip, id="torch_compat.adadelta"
    ),
    pytest.param(
        lambda: torch_compat.adafactor(1e-2),
        _msgpack_roundtrip,
        id="torch_compat.adafactor",
    ),
    pytest.param(
        lambda: torch_compat.asgd(1e-2), _orbax_roundtrip, id="torch_compat.asgd"
    ),
]


@pytest.mark.parametrize(("make", "roundtrip"), SWAPPED)
def test_raw_restore_is_rebuilt_by_name_and_continues(make, roundtrip, tmp_path):
    tx = make()
    params = testing.example_params()
    params, state = _run(tx, params, tx.init(params), 3)
    raw = roundtrip(state, tmp_path)
    assert isinstance(raw, dict)  # no NamedTuple comes back
    restored = jr.restore_state(raw, jax.eval_shape(tx.init, params))
    assert type(restored) is type(state)
    _assert_identical(restored, state)
    _assert_identical(_run(tx, params, restored, 5), _run(tx, params, state, 5))


@pytest.mark.parametrize(("make", "roundtrip"), SWAPPED)
def test_plain_unflatten_swaps_slots_and_restore_state_does_not(
    make, roundtrip, tmp_path
):
    tx = make()
    params = testing.example_params()
    params, state = _run(tx, params, tx.init(params), 3)
    raw = roundtrip(state, tmp_path)
    template = jax.eval_shape(tx.init, params)
    # The natural fix puts leaves where they do not belong...
    naive = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(raw))
    misplaced = [
        name
        for name in state._fields
        if [np.shape(x) for x in jax.tree.leaves(getattr(naive, name))]
        != [np.shape(x) for x in jax.tree.leaves(getattr(state, name))]
        or not all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(getattr(naive, name)),
                jax.tree.leaves(getattr(state, name)),
                strict=True,
            )
        )
    ]
    assert misplaced, "expected the naive unflatten to swap fields"
    # ...while restore_state matches every leaf by name, whatever the order.
    reordered = dict(reversed(list(raw.items())))
    _assert_identical(jr.restore_state(reordered, template), state)


def test_restore_state_handles_chains_injected_and_quantized_states(tmp_path):
    params = {"w": jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64), "b": jnp.ones(3)}
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        jr.inject_hyperparams(jr.rmsprop)(1e-2, centered=True),
        jr.quantized_state(jr.adam(1e-2)),
    )
    params, state = _run(tx, params, tx.init(params), 3)
    raw = _orbax_roundtrip(state, tmp_path)
    assert isinstance(raw, list)
    restored = jr.restore_state(raw, jax.eval_shape(tx.init, params))
    assert isinstance(restored[2].inner.mu["w"], jr.QuantizedArray)
    _assert_identical(restored, state)
    _assert_identical(_run(tx, params, restored, 2), _run(tx, params, state, 2))


def test_restore_state_reads_flax_state_dicts():
    import flax.serialization

    tx = optax.chain(optax.clip(1.0), jr.rmsprop(1e-2, centered=True))
    params = testing.example_params()
    _, state = _run(tx, params, tx.init(params), 2)
    raw = flax.serialization.to_state_dict(state)
    assert set(raw) == {"0", "1"}  # a tuple as a dict keyed by index
    _assert_identical(jr.restore_state(raw, tx.init(params)), state)


def test_restore_state_names_missing_and_unexpected_leaves():
    tx = jr.rmsprop(1e-2, centered=True)
    params = {"w": jnp.zeros(2)}
    raw = {"count": 1, "nu": {"w": jnp.ones(2)}, "mu": {"w": jnp.ones(2)}}
    assert int(jr.restore_state(raw, tx.init(params)).count) == 1
    missing = {"count": 1, "nu": {"w": jnp.ones(2)}}
    with pytest.raises(
        ValueError, match=r"no leaf at \['mu'\]\['w'\] \(template path \.mu\['w'\]\)"
    ):
        jr.restore_state(missing, tx.init(params))
    extra = {**raw, "trace": {"w": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"does not have, at \['trace'\]\['w'\]"):
        jr.restore_state(extra, tx.init(params))
    positional = [1, {"w": jnp.ones(2)}, {"w": jnp.ones(2)}]  # no names: refused
    with pytest.raises(ValueError, match=r"no leaf at \['count'\]"):
        jr.restore_state(positional, tx.init(params))


def test_restore_state_checks_shapes_and_dtypes():
    tx = jr.adam(1e-2)
    template = jax.eval_shape(tx.init, {"w": jnp.zeros(2)})
    raw = {"count": 1, "mu": {"w": jnp.ones(3)}, "nu": {"w": jnp.ones(2)}}
    with pytest.raises(
        ValueError, match=r"\.mu\['w'\] is float32\[3\], the template's is float32\[2\]"
    ):
        jr.restore_state(raw, template)
    raw = {"count": 1, "mu": {"w": jnp.ones(2, jnp.bfloat16)}, "nu": {"w": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"\.mu\['w'\] is bfloat16\[2\]"):
        jr.restore_state(raw, template)


def test_conversion_works_under_jit():
    params = testing.example_params()
    ref = optax.adam(1e-2)
    _, ref_state = _run(ref, params, ref.init(params), 2)
    ours = jr.adam(1e-2)
    state = jax.jit(lambda s: jr.from_optax(s, ours, params))(ref_state)
    _assert_identical(state, jr.from_optax(ref_state, ours, params))
    back = jax.jit(lambda s: jr.to_optax(s, ref, params))(state)
    _assert_identical(back, ref_state)


def test_a_raw_restore_is_pointed_to_restore_state():
    params = testing.example_params()
    raw = {"count": 0, "mu": params, "nu": params}
    with pytest.raises(
        TypeError, match=r"got dict \(a checkpoint restored .*restore_state"
    ):
        jr.from_optax(raw, jr.adam(0.1), params)


def test_a_traced_count_is_accepted():
    params = testing.example_params()
    ref_state = optax.adam(0.1).init(params)
    state = jax.jit(lambda c: jr.from_optax(ref_state, jr.adam(0.1), params, count=c))(
        jnp.asarray(0)
    )
    assert int(state.count) == 0


def test_a_flag_that_follows_from_the_count_is_checked_against_it():
    """optax's optimistic rules keep ``is_initial_step``; ours derive it from count."""
    params = {"w": jnp.ones(3)}
    ref = optax.optimistic_gradient_descent(0.1)
    fresh = ref.init(params)  # is_initial_step=True
    with pytest.raises(ValueError, match="is_initial_step is True, which contradicts"):
        jr.from_optax(fresh, jr.optimistic_gradient_descent(0.1), params, count=2)
    with pytest.raises(ValueError, match="pass count="):
        jr.from_optax(fresh, jr.optimistic_gradient_descent(0.1), params)
    back = jr.to_optax(jr.optimistic_gradient_descent(0.1).init(params), ref, params)
    assert bool(back[0].is_initial_step)
