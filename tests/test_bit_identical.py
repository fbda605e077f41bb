"""Every rule's numbers are unchanged by refactors: saved trajectories, replayed.

``tests/fixtures/trajectories.npz`` is written by ``make_trajectory_fixtures.py``
(first before the core was reorganised in issue 13; rewritten in issue 14 with
the rules added since, from code that reproduced the first fixture bit for bit
on its machine and within 8 ulp on the new one). Each saved step is replayed
teacher-forced: the saved state, parameters and gradients go in, and the update
and new state that come out must be the saved ones, bit for bit, on the kind of
machine the fixture was written on (same CPU model and vector flags: see
``machine``). XLA's CPU code differs between CPU models (last-ulp differences
in float32 arithmetic), so another kind of machine has its own replayed outputs
stored beside the fixture (``trajectories.<hash>.npz``, written by
``make_trajectory_fixtures.py --this-machine`` and checked to be within the
cross-machine tolerance of the fixture's) and is asked for those bits; on any
other machine the float leaves are compared within ``CROSS_MACHINE_ULP`` ulp of
each leaf's largest magnitude, and the rest exactly.

Rules that need the loss in ``update`` (MoMo, Polyak) are not saved here; they,
and rules added after the fixture was written, are pinned by their reference
comparisons (``tests/test_reference.py``).
"""

import jax
import numpy as np
import pytest
from make_trajectory_fixtures import (
    FIXTURE,
    HERE,
    STEPS,
    cases,
    layout,
    machine,
    replay,
    unpack,
)


SAVED = np.load(FIXTURE)
SAVED_CASES = sorted(set(SAVED.files) - {"machine"})
CASES = {key: (make, dtype, matrices) for key, make, dtype, matrices in cases()}
# Outputs of the saved steps replayed on other kinds of machine, by machine.
REPLAYS = {
    str(f["machine"]): f
    for f in map(np.load, sorted((HERE / "fixtures").glob("trajectories.*.npz")))
}
THIS_MACHINE = machine()
# Cross-machine tolerance, in ulp of each leaf's largest magnitude. XLA:CPU
# orders sums and contracts multiply-adds by CPU model; a difference made in a
# reduction or a matrix product is relative to the leaf's scale, not to each
# element's (small elements of a Newton-Schulz iterate move by hundreds of
# their own ulp). Measured, AMD Zen 4 (family 25 model 17) against the Intel
# fixture: Muon 19 and 9 (its float32 Newton-Schulz cases), every other case 5
# or less.
CROSS_MACHINE_ULP = 32


def _same(actual, expected, what, *, bits):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, what
    if bits or not np.issubdtype(expected.dtype, np.inexact) or not expected.size:
        assert actual.tobytes() == expected.tobytes(), what
        return
    scale = np.spacing(np.max(np.abs(expected))).astype(np.float64)
    error = np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))
    assert error <= CROSS_MACHINE_ULP * scale, (
        f"{what}: {error / scale:.1f} ulp of the leaf's largest magnitude"
    )


def _compare(computed, expected, key, *, bits):
    for k in range(STEPS):
        u, state = computed[2 * k : 2 * k + 2]
        saved_u, saved_state = expected[2 * k : 2 * k + 2]
        assert jax.tree.structure(state) == jax.tree.structure(saved_state)
        for name, new, old in (("update", u, saved_u), ("state", state, saved_state)):
            for i, (a, b) in enumerate(
                zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True)
            ):
                _same(a, b, f"{key}: {name} leaf {i} at step {k}", bits=bits)


def test_every_saved_case_still_exists():
    assert set(SAVED_CASES) <= set(CASES)
    for replays in REPLAYS.values():
        assert set(replays.files) - {"machine"} == set(SAVED_CASES)


@pytest.mark.parametrize("key", SAVED_CASES)
def test_replayed_steps_are_bit_identical(key):
    """The saved machine's bits, or this machine's stored replay's, else close."""
    make, dtype, matrices = CASES[key]
    with jax.enable_x64(dtype == "float64"):
        computed, expected = replay(make, dtype, matrices, SAVED[key])
        if str(SAVED["machine"]) == THIS_MACHINE:
            _compare(computed, expected, key, bits=True)
        elif THIS_MACHINE in REPLAYS:
            stored = unpack(REPLAYS[THIS_MACHINE][key], computed)
            _compare(computed, stored, key, bits=True)
        else:
            _compare(computed, expected, key, bits=False)


@pytest.mark.parametrize("replayed_on", sorted(REPLAYS))
def test_other_machines_replays_are_close_to_the_fixture(replayed_on):
    """A stored replay was made by code that passes the cross-machine check."""
    replays = REPLAYS[replayed_on]
    for key in SAVED_CASES:
        make, dtype, matrices = CASES[key]
        with jax.enable_x64(dtype == "float64"):
            trees = unpack(SAVED[key], layout(make(), dtype, matrices))
            expected = [t for k in range(STEPS) for t in trees[3 * k + 2 : 3 * k + 4]]
            stored = unpack(replays[key], expected)
        _compare(stored, expected, f"{key} replayed on {replayed_on}", bits=False)
