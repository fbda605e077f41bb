"""Every rule's numbers are unchanged by refactors: saved trajectories, replayed.

``tests/fixtures/trajectories.npz`` was written by ``make_trajectory_fixtures.py``
before the core was reorganised (issue 13). Each saved step is replayed
teacher-forced: the saved state, parameters and gradients go in, and the update
and new state that come out must be the saved ones, bit for bit, on the kind of
machine the fixture was written on. XLA's CPU code differs between instruction
sets (last-ulp differences in transcendental functions), so on another machine
the float leaves are compared within a few ulp and the rest exactly.

The saved cases are the rules and options that existed when the fixture was
written; rules added later are pinned by their reference comparisons
(``tests/test_reference.py``), and the fixture can be rewritten to cover them.
"""

import jax
import numpy as np
import pytest
from make_trajectory_fixtures import (
    FIXTURE,
    STEPS,
    cases,
    grads,
    machine,
    params,
    unpack,
)


SAVED = np.load(FIXTURE)
SAME_MACHINE = str(SAVED["machine"]) == machine()
CASES = {key: (make, dtype, matrices) for key, make, dtype, matrices in cases()}
SAVED_CASES = sorted(set(SAVED.files) - {"machine"})


def _same(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, what
    if SAME_MACHINE or not np.issubdtype(expected.dtype, np.inexact):
        assert actual.tobytes() == expected.tobytes(), what
    else:
        np.testing.assert_array_max_ulp(actual, expected, maxulp=8)


def test_every_saved_case_still_exists():
    assert set(SAVED_CASES) <= set(CASES)


@pytest.mark.parametrize("key", SAVED_CASES)
def test_replayed_steps_are_bit_identical(key):
    make, dtype, matrices = CASES[key]
    with jax.enable_x64(dtype == "float64"):
        tx = make()
        p0 = params(np.dtype(dtype), matrices)
        state0 = tx.init(p0)
        u0 = jax.tree.map(np.zeros_like, p0)
        layout = [state0, p0, u0] * STEPS + [state0]
        saved = unpack(SAVED[key], layout)
        update = jax.jit(tx.update)
        for k in range(STEPS):
            state, p, expected_u = saved[3 * k : 3 * k + 3]
            expected_state = saved[3 * k + 3]
            u, new_state = update(grads(p, k), state, p)
            assert jax.tree.structure(new_state) == jax.tree.structure(expected_state)
            for i, (a, b) in enumerate(
                zip(jax.tree.leaves(u), jax.tree.leaves(expected_u), strict=True)
            ):
                _same(a, b, f"{key}: update leaf {i} at step {k}")
            for i, (a, b) in enumerate(
                zip(
                    jax.tree.leaves(new_state),
                    jax.tree.leaves(expected_state),
                    strict=True,
                )
            ):
                _same(a, b, f"{key}: state leaf {i} after step {k}")
