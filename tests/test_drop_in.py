"""The catalog as optax drop-ins at the edges: complex, integer and abstract leaves,
optax's ``inject_hyperparams`` signature, and state classes that pickle and load
in a fresh process."""

import inspect
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import DROP_INS, build, build_reference

import jaxopt_rules as jr
from jaxopt_rules import testing, torch_compat
from jaxopt_rules.torch_compat._registry import REGISTRY as TORCH_REGISTRY


def _definition(factory):
    rules = getattr(factory, "rules", None)
    inner = rules[0] if rules else factory
    return inner.definition


COMPLEX_CASES = [
    pytest.param(spec, i, id=f"{spec.name}-{i}")
    for spec in DROP_INS
    if _definition(spec.factory).complex_params
    for i, case in enumerate(spec.reference_cases)
    # (Masks and dimension numbers are trees of the example params, not of
    # these; Muon's Schatten rescaling is not defined for complex matrices.)
    if not any("mask" in key for key in case)
    and not set(case) & set(_definition(spec.factory).per_leaf)
    and case.get("preconditioning") != "schatten"
]


def _complex_params(dtype):
    rng = np.random.default_rng(0)
    return {
        "z": jnp.asarray(rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4)), dtype),
        "x": jnp.asarray(rng.normal(size=5), jnp.finfo(dtype).dtype),
    }


def _complex_loss(p):
    return jnp.sum(jnp.abs(p["z"] - (1 + 2j)) ** 2) + jnp.sum(jnp.cos(p["x"]))


def _run(tx, params, steps, update_args=()):
    tx = testing.with_update_args(tx, update_args, _complex_loss)
    state = tx.init(params)
    for _ in range(steps):
        # optax's convention for complex parameters: step along conj(grad).
        grads = jax.tree.map(jnp.conj, jax.grad(_complex_loss)(params))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_rules_support_complex_where_optax_does():
    supported = {s.name for s in jr.REGISTRY if _definition(s.factory).complex_params}
    # optax supports complex parameters in these (and normalize_by_update_norm).
    assert {"sgd", "adam", "adamw", "adagrad", "rmsprop", "lamb"} <= supported


@pytest.mark.parametrize(("spec", "case"), COMPLEX_CASES)
def test_complex_trajectory_matches_optax(spec, case):
    kwargs = spec.reference_cases[case]
    with jax.enable_x64(True):
        params = _complex_params(jnp.complex128)
        ours, state = _run(build(spec.factory, **kwargs), params, 30, spec.update_args)
        theirs, _ = _run(build_reference(spec, **kwargs), params, 30, spec.update_args)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            assert a.dtype == b.dtype
            scale = float(jnp.max(jnp.abs(b)))
            assert float(jnp.max(jnp.abs(a - b))) <= 1e-9 * scale
        # Second moments of |g|^2 are stored real; other slots complex.
        for name, option in _definition(spec.factory).slots:
            if name in state._fields:
                z = getattr(state, name)["z"]
                assert jnp.iscomplexobj(z) != option.square, name


def test_complex_slot_dtypes():
    params = {"z": jnp.ones(3, jnp.complex64)}
    state = jr.adam(1e-3, mu_dtype=jnp.float32, nu_dtype=jnp.bfloat16).init(params)
    assert state.mu["z"].dtype == jnp.complex64
    assert state.nu["z"].dtype == jnp.bfloat16
    with pytest.raises(TypeError, match=r"mu_dtype=bfloat16.*no complex bfloat16"):
        jr.adam(1e-3, mu_dtype=jnp.bfloat16).init(params)
    # Stochastic rounding rounds the real bfloat16 second moment only.
    tx = jr.adam(1e-3, nu_dtype=jnp.bfloat16, stochastic_rounding=True)
    updates, _ = tx.update({"z": jnp.full(3, 1 + 1j, jnp.complex64)}, tx.init(params))
    assert updates["z"].dtype == jnp.complex64
    assert np.all(np.isfinite(np.asarray(updates["z"])))


def test_complex_refused_by_rules_without_complex_math():
    params = {"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"lion: parameter at \['z'\] is complex"):
        jr.lion(1e-3).init(params)
    with pytest.raises(TypeError, match=r"not defined for complex"):
        torch_compat.adam(lr=1e-3).init(params)


def test_complex_square_slot_computed_with_grad_squared_is_named():
    @jr.rule(slots={"nu": jr.Slot(square=True)}, complex_params=True)
    def careless(grad, nu, *, learning_rate):
        nu = nu + grad**2  # complex for complex grads: should be abs_sq(grad)
        return -learning_rate * grad / jnp.sqrt(nu + 1), nu

    tx = careless(learning_rate=0.1)
    params = {"z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"slot 'nu'.*abs_sq"):
        tx.update(params, tx.init(params))


def test_abs_sq():
    z = jnp.array([3 + 4j, -2j, 1.5], jnp.complex64)
    np.testing.assert_array_equal(jr.abs_sq(z), np.array([25.0, 4.0, 2.25]))
    x = jnp.array([-3.0, 0.5])
    np.testing.assert_array_equal(jr.abs_sq(x), np.array([9.0, 0.25]))


# ---------------------------------------------------------------------------
# Abstract, integer and Python-number leaves


ALL_SPECS = [pytest.param(spec, id=f"catalog-{spec.name}") for spec in jr.REGISTRY] + [
    pytest.param(spec, id=f"torch-{spec.name}") for spec in TORCH_REGISTRY
]


def _make(factory, hyperparams, params):
    del params
    return build(factory, **hyperparams)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_abstract_params_give_abstract_state(spec):
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    tx = _make(spec.factory, spec.hyperparams, params)
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    state = tx.init(abstract)
    expected = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        assert isinstance(a, jax.ShapeDtypeStruct)
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_integer_leaves_are_left_untouched(spec):
    params = {"w": jnp.ones((2, 3)), "step": 7, "buffer": jnp.arange(3)}

    def loss(p):
        return jnp.sum(jnp.sin(p["w"])) * 2.0

    def make(params):
        tx = _make(spec.factory, spec.hyperparams, params)
        return testing.with_update_args(tx, spec.update_args, loss)

    tx = make(params)
    state = tx.init(params)
    grads = jax.grad(loss, allow_int=True)(params)
    float_only = {"w": params["w"]}
    reference = make(float_only)
    ref_state = reference.init(float_only)
    for _ in range(3):
        updates, state = jax.jit(tx.update)(grads, state, params)
        expected, ref_state = jax.jit(reference.update)(
            {"w": grads["w"]}, ref_state, float_only
        )
        # float0 gradients (jax.grad with allow_int) pass through unchanged.
        assert updates["step"].dtype == jax.dtypes.float0
        np.testing.assert_array_equal(updates["w"], expected["w"])
    # Integer gradients give zero updates of their dtype, as in optax.
    int_grads = {"w": grads["w"], "step": 0, "buffer": jnp.ones(3, jnp.int32)}
    updates, _ = tx.update(int_grads, state, params)
    assert updates["buffer"].dtype == jnp.int32
    np.testing.assert_array_equal(updates["buffer"], 0)
    new = optax.apply_updates(params, {**updates, "step": jnp.zeros((), jnp.int32)})
    assert int(new["step"]) == 7
    np.testing.assert_array_equal(new["buffer"], params["buffer"])


def test_integer_leaves_initialise_like_optax():
    params = {"w": jnp.ones(2), "i": 3, "j": jnp.arange(3)}
    ours = jr.adam(1e-3).init(params)
    theirs = optax.adam(1e-3).init(params)[0]
    for slot in ("mu", "nu"):
        for a, b in zip(
            jax.tree.leaves(getattr(ours, slot)),
            jax.tree.leaves(getattr(theirs, slot)),
            strict=True,
        ):
            assert (a.shape, a.dtype) == (b.shape, b.dtype)


def test_float8_parameters_are_refused():
    params = {"w": jnp.ones(2, jnp.float8_e4m3fn)}
    with pytest.raises(TypeError, match=r"adam: parameter at \['w'\].*8-bit float"):
        jr.adam(1e-3).init(params)


# ---------------------------------------------------------------------------
# inject_hyperparams: optax's signature


def test_inject_hyperparams_takes_optax_signature():
    ours = inspect.signature(jr.inject_hyperparams)
    theirs = inspect.signature(optax.inject_hyperparams)
    assert list(ours.parameters) == list(theirs.parameters)
    for name, p in theirs.parameters.items():
        assert ours.parameters[name].kind == p.kind, name
        assert ours.parameters[name].default == p.default, name
    params = {"w": jnp.ones(3)}
    by_keyword = jr.inject_hyperparams(inner_factory=jr.rmsprop)(learning_rate=0.1)
    assert "learning_rate" in by_keyword.init(params).hyperparams
    # A single string is one name, not its characters.
    tx = jr.inject_hyperparams(jr.adam, "b1")(learning_rate=0.1, b1=0.5)
    state = tx.init(params)
    assert "b1" not in state.hyperparams
    assert "learning_rate" in state.hyperparams
    positional = jr.inject_hyperparams(jr.adam, ("b1", "b2"))(learning_rate=0.1)
    assert set(positional.init(params).hyperparams) == {
        "learning_rate",
        "eps",
        "eps_root",
    }


# ---------------------------------------------------------------------------
# State classes


def _every_state():
    """A state of every rule and every set of options in both registries."""
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
    states = [jr.normalized_sgd(0.1).init(params)]
    for spec in jr.REGISTRY:
        for case in (spec.hyperparams, *spec.cases):
            # (Per-leaf values, a mask or dimension numbers, are trees of the
            # example params: these params are another tree.)
            per_leaf = spec.factory.definition.per_leaf
            case = {k: v for k, v in case.items() if k not in per_leaf}
            accepted = inspect.signature(spec.factory).parameters
            switches = (False, True) if "stochastic_rounding" in accepted else ()
            for stochastic in switches:
                tx = spec.factory(**case, stochastic_rounding=stochastic)
                states.append(tx.init(params))
    for spec in TORCH_REGISTRY:
        for case in (spec.hyperparams, *spec.cases):
            states.append(spec.factory(**case).init(params))
    return states


def test_every_state_type_pickles_into_a_fresh_process(tmp_path):
    states = _every_state()
    types = {type(s) for s in states}
    assert len(types) >= 29
    path = tmp_path / "states.pkl"
    path.write_bytes(pickle.dumps(states))
    script = textwrap.dedent(
        f"""
        import pickle, sys
        states = pickle.loads(open({str(path)!r}, "rb").read())
        print(len(states), len({{type(s) for s in states}}))
        for s in states:
            print(type(s).__module__, type(s).__qualname__, s._fields)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == f"{len(states)} {len(types)}"
    expected = [
        f"{type(s).__module__} {type(s).__qualname__} {s._fields}" for s in states
    ]
    assert out[1:] == expected
    # And the loaded states are the classes this process's factories build.
    loaded = pickle.loads(path.read_bytes())
    for a, b in zip(loaded, states, strict=True):
        assert type(a) is type(b)
        assert jax.tree.structure(a) == jax.tree.structure(b)


def test_catalog_state_classes_are_importable():
    from jaxopt_rules._core import _state

    state = jr.adam(1e-3).init({"w": jnp.ones(2)})
    assert getattr(_state, type(state).__name__) is type(state)
    assert type(state).__name__ == "AdamState"
    sgd_state = jr.sgd(0.1).init({"w": jnp.ones(2)})
    assert _state.SgdCountState is type(sgd_state)


_ORDER_SCRIPT = """
import pickle, sys
import jax.numpy as jnp
import jaxopt_rules as jr

def make_user_rule():
    @jr.rule(name="adam")
    def user_adam(grad, mu, nu, *, learning_rate):
        return -learning_rate * grad, mu, nu
    return user_adam

params = {"w": jnp.ones(2)}
if sys.argv[1] == "user-first":
    user = make_user_rule()(learning_rate=0.1).init(params)
    catalog = jr.adam(0.1).init(params)
else:
    catalog = jr.adam(0.1).init(params)
    user = make_user_rule()(learning_rate=0.1).init(params)
print(type(catalog).__qualname__, type(user).__qualname__, type(catalog) is type(user))
sys.stdout.flush()
"""


def test_state_class_names_do_not_depend_on_creation_order(tmp_path):
    script = tmp_path / "order.py"
    script.write_text(_ORDER_SCRIPT)
    outputs = {
        subprocess.run(
            [sys.executable, str(script), order],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for order in ("user-first", "catalog-first")
    }
    # Same names in both orders, and never the same class for two rules.
    assert outputs == {"AdamState AdamState False"}


def test_a_state_from_another_rule_is_refused():
    params = {"w": jnp.ones(3)}
    adam_state = jr.adam(1e-3).init(params)
    for tx in (jr.lion(1e-3), jr.rmsprop(1e-3)):
        with pytest.raises(TypeError, match=r"expected a \w+State.*got a AdamState"):
            tx.update(params, adam_state, params)


def test_a_rule_returning_none_is_named():
    @jr.rule
    def forgetful(grad, *, learning_rate):
        grad * learning_rate  # (the return was forgotten)

    tx = forgetful(learning_rate=0.1)
    with pytest.raises(TypeError, match=r"forgetful: the rule function returned None"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


def test_float16_parameters_keep_squares_in_float32():
    # optax.adam here: nu underflows to 0 in float16 and the step is -inf.
    params = {"w": jnp.ones(3, jnp.float16)}
    tx = jr.adam(1e-3)
    state = tx.init(params)
    assert state.mu["w"].dtype == jnp.float16
    assert state.nu["w"].dtype == jnp.float32
    updates, _ = tx.update({"w": jnp.full(3, 1e-3, jnp.float16)}, state)
    assert updates["w"].dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), -1e-3, rtol=1e-2)
