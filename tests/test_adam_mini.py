"""Adam-mini's partitions; its numbers are verified against the authors' code
in test_authors.py (whole leaves, Adam blocks, rows and per-head chunks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_rules as jr


def _run(tx, params, steps=3):
    state = tx.init(params)
    out = []
    for k in range(steps):
        grads = jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)) + p, params)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        out.append(updates)
    return out, state


def test_columns_of_a_kernel_are_the_rows_of_its_transpose():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    cols, state = _run(jr.adam_mini(0.1, blocks="columns"), {"w": w})
    rows, _ = _run(jr.adam_mini(0.1, blocks="rows"), {"w": w.T})
    assert state.nu["w"].shape == (5,)  # one second moment per output neuron
    for a, b in zip(cols, rows, strict=True):
        np.testing.assert_allclose(a["w"], b["w"].T, rtol=1e-6)


def test_one_chunk_per_element_is_adam():
    p = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)), jnp.float32)}
    mini, _ = _run(jr.adam_mini(0.1, blocks=6), p)
    adam, _ = _run(jr.adam_mini(0.1, blocks="adam"), p)
    plain, _ = _run(jr.adamw(0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0), p)
    for a, b, c in zip(mini, adam, plain, strict=True):
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)
        np.testing.assert_allclose(b["w"], c["w"], rtol=1e-6)


def test_auto_partition_and_state_size():
    params = {"kernel": jnp.zeros((64, 32)), "bias": jnp.zeros(32), "s": jnp.zeros(())}
    state = jr.adam_mini(1e-3).init(params)
    assert state.nu["kernel"].shape == (32,)
    assert state.nu["bias"].shape == (32,)
    assert state.nu["s"].shape == ()
    # Second moments: 32 numbers for the 2048 kernel entries.
    assert jr.tree_bytes(state.nu) < jr.tree_bytes(state.mu) / 20


@pytest.mark.parametrize(
    ("blocks", "message"),
    [(5, "5 chunks do not divide a leaf of shape (3, 4)"), ("heads", "blocks must be")],
)
def test_a_partition_that_does_not_fit_is_refused_at_init(blocks, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        jr.adam_mini(1e-3, blocks=blocks).init({"w": jnp.zeros((3, 4))})
