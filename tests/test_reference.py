"""Every registered rule against its independent reference implementation.

For each rule and each option set in ``spec.reference_cases``, on the
conformance kit's example problem (a non-quadratic loss over 2-d, 1-d, 4-d and
scalar leaves):

* float32, 100 steps, teacher-forced: at every step both implementations get
  the same gradients, parameters and state (the reference's), and the updates
  and every state slot agree within 1e-6 relative (max-norm over the tree).
  Teacher forcing measures the formula at each step; a free-running float32
  comparison would mostly measure how chaotic dynamics amplify rounding.
* float64, 100 free-running steps: the parameters agree within 1e-12 relative.

Hyperparameter precision: this package rounds every float hyperparameter to
the compute dtype before using it (so injected and baked-in hyperparameters
give identical trajectories), while optax evaluates expressions such as
``1 - b2`` on the Python float in double precision. The float32 comparison
therefore hands both sides float32 hyperparameter values;
``test_python_float_hyperparameters_are_rounded_first`` pins the policy.
"""

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


CASES = [
    pytest.param(spec, i, id=f"{spec.name}-{i}")
    for spec in jr.REGISTRY
    for i in range(len(spec.reference_cases))
]


def _arguments(spec: jr.RuleSpec, case: int, dtype: Any) -> dict[str, Any]:
    """All of the rule's arguments (defaults included) that the reference takes,
    with every float given as a ``dtype`` scalar."""
    bound = inspect.signature(spec.factory).bind(**spec.reference_cases[case])
    bound.apply_defaults()
    accepted = inspect.signature(spec.reference_factory).parameters
    scalar = np.dtype(dtype).type
    return {
        k: scalar(v) if isinstance(v, float) else v
        for k, v in bound.arguments.items()
        if k in accepted
    }


def _relative_error(actual: Any, expected: Any) -> float:
    """max |a - e| / max |e| over all leaves of two trees; inf if either holds
    a non-finite value (a comparison that must not pass by accident)."""
    pairs = list(zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True))
    if not pairs:
        return 0.0
    arrays = [(np.asarray(a, np.float64), np.asarray(e, np.float64)) for a, e in pairs]
    if not all(np.isfinite(a).all() and np.isfinite(e).all() for a, e in arrays):
        return float("inf")
    diff = max(float(np.max(np.abs(a - e))) for a, e in arrays)
    scale = max(float(np.max(np.abs(e))) for _, e in arrays)
    return diff / scale if scale > 0 else diff


@pytest.mark.parametrize(("spec", "case"), CASES)
def test_float32_steps_match_reference(spec, case):
    kwargs = _arguments(spec, case, np.float32)
    ours, ref = spec.factory(**kwargs), spec.reference_factory(**kwargs)
    params = testing.example_params(jnp.float32)
    ref_state = ref.init(params)
    our_state = ours.init(params)
    slots = our_state._fields[1:]
    our_update, ref_update = jax.jit(ours.update), jax.jit(ref.update)
    worst = {"updates": 0.0} | {slot: 0.0 for slot in slots}
    for step in range(100):
        grads = testing.example_grads(params)
        # Teacher forcing: our rule starts from the reference's state.
        forced = our_state._replace(
            count=jnp.asarray(step, jnp.int32),
            **{slot: optax.tree.get(ref_state, slot) for slot in slots},
        )
        updates, new_state = our_update(grads, forced, params)
        expected, ref_state = ref_update(grads, ref_state, params)
        worst["updates"] = max(worst["updates"], _relative_error(updates, expected))
        for slot in slots:
            worst[slot] = max(
                worst[slot],
                _relative_error(
                    getattr(new_state, slot), optax.tree.get(ref_state, slot)
                ),
            )
        params = optax.apply_updates(params, expected)
    assert max(worst.values()) <= 1e-6, worst


@pytest.mark.parametrize(("spec", "case"), CASES)
def test_float64_trajectory_matches_reference(spec, case):
    with jax.enable_x64(True):
        kwargs = _arguments(spec, case, np.float64)
        trajectories = []
        for factory in (spec.factory, spec.reference_factory):
            tx = factory(**kwargs)
            params = testing.example_params(jnp.float64)
            state = tx.init(params)

            @jax.jit
            def step(params, state, tx=tx):
                updates, state = tx.update(testing.example_grads(params), state, params)
                return optax.apply_updates(params, updates), state

            for _ in range(100):
                params, state = step(params, state)
            assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
            trajectories.append(params)
        assert _relative_error(*trajectories) <= 1e-12


def test_python_float_hyperparameters_are_rounded_first():
    """A Python-float hyperparameter acts exactly as its float32 value."""
    params = testing.example_params(jnp.float32)
    grads = testing.example_grads(params)
    python = jr.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)
    arrays = jr.adam(
        jnp.float32(0.01),
        b1=jnp.float32(0.9),
        b2=jnp.float32(0.999),
        eps=jnp.float32(1e-8),
    )
    for a, b in zip(
        jax.tree.leaves(jax.jit(python.update)(grads, python.init(params))),
        jax.tree.leaves(jax.jit(arrays.update)(grads, arrays.init(params))),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    # optax keeps 1 - b2 in double precision: its first second moment is
    # (1 - 0.999) g^2 rounded once, ours (1 - float32(0.999)) g^2.
    (_, state) = jax.jit(python.update)(grads, python.init(params))
    g = np.asarray(grads["dense"]["w"], np.float32)
    one_minus_b2 = np.float32(1) - np.float32(0.999)
    np.testing.assert_array_equal(
        np.asarray(state.nu["dense"]["w"]), one_minus_b2 * (g * g)
    )
