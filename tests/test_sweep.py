"""``jr.sweep``: N hyperparameter values of a rule as one compiled program.

For every rule of the catalog, a sweep of its step size (and of its weight
decay, where it has one) over three values, vmapped in one jitted program,
gives each run's trajectory as the rule run alone with that value: in
float64, every update of 4 free-running steps within 1e-12 relative (float32
would measure how the dynamics amplify last-ulp differences between the two
compiled programs, as in the kit's ``inject_hyperparams`` check).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build

import jaxopt_rules as jr
from jaxopt_rules import testing


STEPS = 4
SCALES = (1.0, 0.5, 0.25)
_example_grads = jax.jit(testing.example_grads)  # eager, it would dominate the test


def _swept(spec) -> dict[str, list[float]]:
    """Three values of the step size, and of the weight decay where there is one."""
    parameters = inspect.signature(spec.factory).parameters
    arg = spec.schedule_arg or "learning_rate"
    base = spec.hyperparams.get(arg, parameters[arg].default)
    swept = {arg: [base * s for s in SCALES]}
    if "weight_decay" in parameters:
        swept["weight_decay"] = [0.0, 1e-2, 1e-1]
    return swept


def _alone(spec, hyper, params):
    """The rule with one set of values, jitted, ``STEPS`` steps: the updates."""
    tx = testing.with_update_args(build(spec.factory, **hyper), spec.update_args)
    step = jax.jit(tx.update)
    state, out = tx.init(params), []
    for _ in range(STEPS):
        updates, state = step(_example_grads(params), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        out.append(updates)
    return out


@pytest.mark.parametrize("spec", jr.REGISTRY, ids=lambda s: s.name)
def test_sweep_equals_separate_runs(spec):
    with jax.enable_x64(True):
        _compare_sweep_with_separate_runs(spec)


def _compare_sweep_with_separate_runs(spec):
    swept = _swept(spec)
    fixed = {k: v for k, v in spec.hyperparams.items() if k not in swept}
    tx = jr.sweep(spec.factory, swept, **fixed)
    n = len(SCALES)
    params = testing.example_params(jnp.float64)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * n), params)

    @jax.jit
    def run(params):
        state, out = tx.init(params), []
        for _ in range(STEPS):
            grads = jax.vmap(testing.example_grads)(params)
            if testing.takes_per_example(spec.factory):  # DP-SGD: examples
                grads = jax.vmap(testing.example_batch)(grads)
            extra = {}
            if "value" in spec.update_args:
                extra["value"] = jax.vmap(testing.example_loss)(params)
            if "grad" in spec.update_args:
                extra["grad"] = grads
            # functions of the parameters: not batched
            extra |= testing.loss_functions(spec.update_args, testing.example_loss)
            updates, state = tx.update(grads, state, params, **extra)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
            out.append(updates)
        return out

    batched = run(stacked)
    for i in range(n):
        hyper = {**fixed, **{k: v[i] for k, v in swept.items()}}
        alone = _alone(spec, hyper, params)
        for step in range(STEPS):
            testing.assert_trees_close(
                "sweep",
                f"run {i}, step {step + 1}",
                jax.tree.map(lambda x, i=i: x[i], batched[step]),
                alone[step],
                rtol=1e-12,
                atol=1e-15,
            )


def test_sweep_is_one_program_whatever_the_values():
    tx_a = jr.sweep(jr.adam, {"learning_rate": [0.1, 0.01]})
    tx_b = jr.sweep(jr.adam, {"learning_rate": [0.3, 0.03]})
    params = {"w": jnp.ones((2, 3))}

    @jax.jit
    def first_update(state, params):
        return tx_a.update(jax.tree.map(jnp.ones_like, params), state, params)[0]

    a = first_update(tx_a.init(params), params)
    b = first_update(tx_b.init(params), params)  # same program, other values
    assert first_update._cache_size() == 1
    np.testing.assert_allclose(a["w"][:, 0], [-0.1, -0.01], rtol=1e-6)
    np.testing.assert_allclose(b["w"][:, 0], [-0.3, -0.03], rtol=1e-6)


def test_sweep_refuses_bad_grids():
    with pytest.raises(ValueError, match="same number of values"):
        jr.sweep(jr.adam, {"learning_rate": [0.1, 0.01], "b1": [0.9, 0.8, 0.7]})
    with pytest.raises(ValueError, match="one value per run"):
        jr.sweep(jr.adam, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="both as swept and as fixed"):
        jr.sweep(jr.adam, {"learning_rate": [0.1]}, learning_rate=0.1)
    with pytest.raises(ValueError, match="at least one"):
        jr.sweep(jr.adam, {}, learning_rate=0.1)


def test_a_branch_on_the_step_count_stays_a_branch_in_every_run():
    # SOAP refreshes its eigenbases behind lax.switch on the count; under a
    # plain vmap the batched count turns it into a select of every branch.
    rates = [1e-3, 3e-2]
    tx = jr.sweep(jr.soap, {"learning_rate": rates}, precondition_frequency=2)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)}
    state = tx.init(params)
    assert "cond[" in str(jax.make_jaxpr(tx.update)(params, state, params))
    update = jax.jit(tx.update)
    solo = [jr.soap(r, precondition_frequency=2) for r in rates]
    singles = [jax.tree.map(lambda x, i=i: x[i], params) for i in range(2)]
    solo_states = [t.init(p) for t, p in zip(solo, singles, strict=True)]
    for k in range(5):
        grads = {"w": jnp.cos(params["w"] * (k + 1))}
        updates, state = update(grads, state, params)
        for i, t in enumerate(solo):
            g = jax.tree.map(lambda x, i=i: x[i], grads)
            u, solo_states[i] = jax.jit(t.update)(g, solo_states[i], singles[i])
            np.testing.assert_array_equal(updates["w"][i], u["w"])
    assert state.count.tolist() == [5, 5]


def test_a_branch_on_a_fixed_integer_hyperparameter_stays_a_branch():
    # Sophia-G refreshes its estimate when count % update_interval == 0; the
    # interval is injected, so batched it would make the branch a select
    # that runs the estimator at every step. A swept interval stays batched.
    x = jnp.ones((5, 3))
    logits = {"logits_fn": lambda p: x @ p["w"]}
    params = {"w": jnp.zeros((2, 3, 4))}
    for swept, branches in (
        ({"learning_rate": [1e-3, 1e-2]}, True),
        ({"update_interval": [2, 3]}, False),
    ):
        tx = jr.sweep(
            jr.sophia_g, swept, **({} if branches else {"learning_rate": 0.1})
        )
        state = tx.init(params)
        program = jax.make_jaxpr(lambda s, p, tx=tx: tx.update(p, s, p, **logits))
        assert ("cond[" in str(program(state, params))) == branches, swept
