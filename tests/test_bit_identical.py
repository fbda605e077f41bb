"""Every rule's numbers are unchanged by refactors: saved trajectories, replayed.

``tests/fixtures/trajectories.npz`` is written by ``make_trajectory_fixtures.py``
(first before the core was reorganised in issue 13; rewritten in issue 14 with
the rules added since, from code that reproduced the first fixture bit for bit
on its machine and within 8 ulp on the new one). Each saved step is replayed
teacher-forced: the saved state, parameters and gradients go in, and the update
and new state that come out must be the saved ones, bit for bit, on the kind of
machine the fixture was written on (same CPU model and vector flags: see
``machine``). XLA's CPU code differs between CPU models (last-ulp differences
in float32 arithmetic), so on another machine the float leaves are compared
within a few ulp and the rest exactly.

Rules that need the loss in ``update`` (MoMo, Polyak) are not saved here; they,
and rules added after the fixture was written, are pinned by their reference
comparisons (``tests/test_reference.py``).
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
