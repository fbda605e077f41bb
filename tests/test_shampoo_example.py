"""examples/shampoo.py: the kit, a float64 NumPy reference, degenerate gradients.

The reference below is written from the update equations with NumPy: loops over
ragged blocks (no padding), ``numpy.linalg.eigh`` for the inverse roots. It
shares no code with the rule.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import load_example

import jaxopt_rules as jr
from jaxopt_rules import testing


shampoo_example = load_example("shampoo")
shampoo = shampoo_example.shampoo


# ---------------------------------------------------------------------------
# The conformance kit


@pytest.mark.slow  # 60-130 s on 2 shared cores (about 2x the kit on Adam)
def test_kit_passes_every_check():
    ran = testing.check_rule(shampoo, shampoo_example.TEST_HYPERPARAMS)
    assert set(ran) == set(testing.CHECKS)  # sharding included (conftest: 8 devices)


@pytest.mark.parametrize("check", ["converges_parabola", "converges_rosenbrock"])
def test_kit_convergence_through_the_preconditioner(check):
    # The kit's problems are vectors, which the graft alone moves; as (n, 1)
    # matrices they go through the Kronecker factors and the inverse roots.
    assert testing.run_check(
        check, shampoo, shampoo_example.TEST_HYPERPARAMS, matrices_only=True
    )


# ---------------------------------------------------------------------------
# Independent float64 reference


def _reference_root(a: np.ndarray, damping: float) -> np.ndarray:
    """(A + damping * lambda_max I)^(-1/4), eigenvalues clipped at 0; I if A = 0."""
    lam, vec = np.linalg.eigh(a)
    top = lam.max()
    if top <= 0:
        return np.eye(len(a))
    return (vec * (np.maximum(lam, 0) + damping * top) ** -0.25) @ vec.T


def _block_ranges(size: int, block: int) -> list[slice]:
    step = min(block, size)
    return [slice(s, min(s + step, size)) for s in range(0, size, step)]


class ReferenceShampoo:
    """Blocked Shampoo with grafting, one leaf, plain NumPy (ragged blocks)."""

    def __init__(self, param, *, block_size, b1, b2, damping, eps, every):
        self.shape = param.shape
        self.b1, self.b2, self.damping, self.eps, self.every = (
            b1,
            b2,
            damping,
            eps,
            every,
        )
        self.nu = np.zeros(param.shape)
        self.mu = np.zeros(param.shape)
        self.blocks = []
        if param.ndim >= 2:
            m, n = int(np.prod(param.shape[:-1])), param.shape[-1]
            for rows in _block_ranges(m, block_size):
                for cols in _block_ranges(n, block_size):
                    r, c = rows.stop - rows.start, cols.stop - cols.start
                    self.blocks.append(
                        {
                            "rows": rows,
                            "cols": cols,
                            "L": np.zeros((r, r)),
                            "R": np.zeros((c, c)),
                            "P": np.eye(r),
                            "Q": np.eye(c),
                        }
                    )

    def direction(self, g: np.ndarray, t: int) -> np.ndarray:
        w = 1.0 - self.b2 if self.b2 < 1 else 1.0
        c = 1.0 - self.b2**t if self.b2 < 1 else 1.0
        self.nu = self.b2 * self.nu + w * g * g
        graft = g / (np.sqrt(self.nu / c) + self.eps)
        if not self.blocks:
            u = graft
        else:
            g2 = g.reshape(-1, self.shape[-1])
            a2 = graft.reshape(-1, self.shape[-1])
            u2 = np.zeros_like(g2)
            for blk in self.blocks:
                gb = g2[blk["rows"], blk["cols"]]
                blk["L"] = self.b2 * blk["L"] + w * gb @ gb.T
                blk["R"] = self.b2 * blk["R"] + w * gb.T @ gb
                if (t - 1) % self.every == 0:
                    blk["P"] = _reference_root(blk["L"], self.damping)
                    blk["Q"] = _reference_root(blk["R"], self.damping)
                d = blk["P"] @ gb @ blk["Q"]
                d_norm = np.linalg.norm(d)
                a_norm = np.linalg.norm(a2[blk["rows"], blk["cols"]])
                u2[blk["rows"], blk["cols"]] = d * a_norm / d_norm if d_norm else 0.0
            u = u2.reshape(self.shape)
        if self.b1 is None:
            return u
        self.mu = self.b1 * self.mu + (1 - self.b1) * u
        return self.mu / (1 - self.b1**t)


def _loss_grad(p):
    """Gradient of sum(0.5 (p - 0.3)^2 + 0.1 sin(3 p) + 0.05 p^4): jnp or np."""
    xp = jnp if isinstance(p, jax.Array) else np
    return p - 0.3 + 0.3 * xp.cos(3.0 * p) + 0.2 * p**3


REFERENCE_TREE_SHAPES = {
    "several_blocks": (6, 9),  # 2 x 3 blocks of 3 x 3
    "ragged": (7, 4),  # 3 x 2 blocks, last row and column ragged
    "short": (2, 5),  # rows shorter than a block: blocks of 2 x 3 and 2 x 2
    "rank3": (2, 2, 5),  # merged to 4 x 5
    "vector": (5,),
    "scalar": (),
}


@pytest.mark.parametrize(
    "options",
    [
        {"b1": 0.9, "b2": 0.99},  # Adam graft, momentum
        {"b1": None, "b2": 1.0},  # AdaGrad graft, sums, no momentum
    ],
    ids=["adam_graft", "adagrad_graft"],
)
def test_float64_trajectory_matches_numpy_reference(options):
    steps, every, block, lr, damping, eps = 24, 4, 3, 0.05, 1e-3, 1e-8
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in REFERENCE_TREE_SHAPES.items()}

    refs = {
        k: ReferenceShampoo(
            v, block_size=block, damping=damping, eps=eps, every=every, **options
        )
        for k, v in start.items()
    }
    expected = [dict(start)]
    for t in range(1, steps + 1):
        expected.append(
            {
                k: p - lr * refs[k].direction(np.asarray(_loss_grad(p)), t)
                for k, p in expected[-1].items()
            }
        )

    with jax.enable_x64(True):
        tx = shampoo(
            learning_rate=lr,
            block_size=block,
            damping=damping,
            eps=eps,
            precondition_every=every,
            **options,
        )
        params = {k: jnp.asarray(v, jnp.float64) for k, v in start.items()}
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.tree.map(_loss_grad, params), state)
            return optax.apply_updates(params, updates), state

        worst = 0.0
        for t in range(1, steps + 1):
            params, state = step(params, state)
            for k, want in expected[t].items():
                got = np.asarray(params[k])
                assert got.dtype == np.float64
                err = np.max(np.abs(got - want)) / np.max(np.abs(want))
                worst = max(worst, float(err))
                assert err < 1e-10, f"step {t}, leaf {k!r}: relative error {err:.2e}"
    # The trajectory moved (the comparison is not between two standing points).
    moved = max(
        np.max(np.abs(expected[-1][k] - start[k])) / np.max(np.abs(start[k]))
        for k in start
    )
    assert moved > 0.1
    print(f"worst relative error over {steps} steps: {worst:.1e}")


def test_reference_blocks_are_ragged():
    # The reference really covers ragged and short blocks (not only full ones).
    ref = ReferenceShampoo(
        np.zeros((7, 4)), block_size=3, b1=None, b2=1.0, damping=1e-3, eps=0, every=1
    )
    sizes = [(b["L"].shape[0], b["R"].shape[0]) for b in ref.blocks]
    assert sizes == [(3, 3), (3, 1), (3, 3), (3, 1), (1, 3), (1, 1)]


# ---------------------------------------------------------------------------
# Ill-conditioned and degenerate gradients


def _graft_norm(g: np.ndarray, b2: float, eps: float) -> float:
    """Norm of Adam's first unit step: g / (sqrt(g^2) + eps) (bias-corrected)."""
    del b2  # with nu = (1 - b2) g^2 and correction 1 - b2, nu / c = g^2
    return float(np.linalg.norm(g / (np.abs(g) + eps)))


def _spectrum_gradient(shape, singular_values, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    s = np.zeros(shape)
    s[: len(singular_values), : len(singular_values)] = np.diag(singular_values)
    return (u @ s @ v.T).astype(np.float32)


@pytest.mark.parametrize("block_size", [8, 3])
def test_ill_conditioned_gradients_give_finite_steps(block_size):
    rank_one = np.outer(np.arange(1.0, 9.0), np.linspace(-1, 1, 6)).astype(np.float32)
    grads = {
        "rank_one": rank_one,
        "spread_1e8": _spectrum_gradient((8, 6), np.logspace(2, -6, 6)),
        "huge": _spectrum_gradient((8, 6), np.logspace(15, 7, 6), seed=1),
        "zero": np.zeros((8, 6), np.float32),
        "vector": np.array([1e-20, 1.0, 1e15], np.float32),
    }
    tx = shampoo(
        learning_rate=1.0, b1=None, block_size=block_size, precondition_every=2
    )
    params = {k: jnp.zeros(g.shape, jnp.float32) for k, g in grads.items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(1, 6):
        updates, state = update(jax.tree.map(jnp.asarray, grads), state)
        for k, u in updates.items():
            assert np.all(np.isfinite(np.asarray(u))), f"step {t}, leaf {k!r}"
        for k, s in zip(state._fields, state, strict=True):
            if k != "count":
                for leaf, value in s.items():
                    assert np.all(np.isfinite(np.asarray(value))), (k, leaf)
        if t == 1:
            # Grafting: one block per leaf at block_size 8, so the step's norm
            # is the norm of Adam's first step, whatever Shampoo's direction.
            if block_size == 8:
                for k in ("rank_one", "spread_1e8", "huge"):
                    got = float(np.linalg.norm(np.asarray(updates[k])))
                    want = _graft_norm(grads[k].astype(np.float64), 0.999, 1e-8)
                    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=k)
            assert not np.any(np.asarray(updates["zero"]))


def test_rank_one_direction_is_the_preconditioned_one():
    # For G = a b^T the Shampoo direction is (a / |a|) (b / |b|)^T up to scale,
    # independent of the damping's tiny eigenvalues: check it in float32.
    a, b = np.arange(1.0, 6.0), np.array([3.0, -1.0, 2.0, 0.5])
    g = np.outer(a, b).astype(np.float32)
    tx = shampoo(learning_rate=1.0, b1=None, block_size=8, damping=1e-6)
    params = {"w": jnp.zeros(g.shape)}
    updates, _ = jax.jit(tx.update)({"w": jnp.asarray(g)}, tx.init(params))
    u = -np.asarray(updates["w"], np.float64)
    want = np.outer(a / np.linalg.norm(a), b / np.linalg.norm(b))
    want *= _graft_norm(g.astype(np.float64), 0.999, 1e-8)
    np.testing.assert_allclose(u, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# State, errors, docs


def test_state_layout():
    tx = shampoo(learning_rate=0.1, block_size=2)
    params = {"w": jnp.ones((3, 4)), "conv": jnp.ones((2, 3, 2, 2)), "b": jnp.ones(4)}
    state = tx.init(params)
    assert type(state).__name__ == "ShampooState"
    shapes = jax.tree.map(jnp.shape, state.left)
    assert shapes == {"w": (4, 2, 2), "conv": (6, 2, 2), "b": (0,)}
    assert jax.tree.map(jnp.shape, state.right)["conv"] == (6, 2, 2)
    np.testing.assert_array_equal(state.left_root["w"][3], np.eye(2))
    assert state.nu["w"].shape == (3, 4)
    assert tx.init({"w": jnp.ones((3, 4))}).mu["w"].shape == (3, 4)
    no_momentum = shampoo(learning_rate=0.1, b1=None, block_size=2)
    assert "mu" not in no_momentum.init(params)._fields


def test_refresh_only_every_k_steps():
    tx = shampoo(learning_rate=0.1, block_size=4, precondition_every=3)
    params = {"w": jnp.zeros((4, 4))}
    state = tx.init(params)
    rng = np.random.default_rng(0)
    roots = []
    update = jax.jit(tx.update)
    for _ in range(7):
        _, state = update({"w": jnp.asarray(rng.normal(size=(4, 4)))}, state)
        roots.append(np.asarray(state.left_root["w"]))
    # Recomputed at steps 1, 4, 7; kept in between.
    for t in (2, 3, 5, 6):
        np.testing.assert_array_equal(roots[t - 1], roots[t - 2])
    for t in (4, 7):
        assert not np.array_equal(roots[t - 1], roots[t - 2])


def test_block_size_is_a_static_hyperparameter_of_one_rule():
    # One decorated rule, blocks of 128 by default: a (300, 5) leaf is 3 x 1
    # blocks, of 128 rows (the last one padded) and 5 columns.
    assert isinstance(shampoo, jr.RuleFactory)
    assert not hasattr(shampoo_example, "make_shampoo")
    state = shampoo(learning_rate=0.1).init({"w": jnp.ones((300, 5))})
    assert state.left["w"].shape == state.left_root["w"].shape == (3, 128, 128)
    assert state.right["w"].shape == state.right_root["w"].shape == (3, 5, 5)
    np.testing.assert_array_equal(state.right_root["w"][2], np.eye(5))
    # Under optax.inject_hyperparams too, block_size among the static arguments.
    injected = optax.inject_hyperparams(
        shampoo, static_args=("block_size", "precondition_every")
    )(learning_rate=0.1, block_size=4)
    inner = injected.init({"w": jnp.ones((6, 3))}).inner_state
    assert inner.left["w"].shape == (2, 4, 4)
    assert inner.right["w"].shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precondition_every": 0}, r"shampoo: precondition_every must be >= 1, got 0"),
        ({"block_size": 0}, r"shampoo: block_size must be >= 1, got 0"),
        ({"damping": 0.0}, r"shampoo: damping must be > 0, got 0\.0"),
        ({"b2": 0.0}, r"shampoo: b2 must be in \(0, 1\], got 0\.0"),
        ({"b1": 1.0}, r"shampoo: b1 must be in \[0, 1\), got 1\.0"),
    ],
)
def test_hyperparameters_outside_their_constraints_are_refused_by_the_factory(
    kwargs, match
):
    with pytest.raises(ValueError, match=match):
        shampoo(learning_rate=0.1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precondition_every": 2.5}, r"shampoo: precondition_every must be an int"),
        ({"block_size": 2.0}, r"shampoo: block_size must be an int, got 2\.0"),
        ({"block_size": True}, r"shampoo: block_size must be an int, got True"),
    ],
)
def test_static_hyperparameters_that_are_not_ints_are_named(kwargs, match):
    params = {"w": jnp.ones((3, 3))}
    tx = shampoo(learning_rate=0.1, **kwargs)
    # Refused by init (block_size shapes the state) or the first update.
    with pytest.raises(TypeError, match=match):
        tx.update(params, tx.init(params))


def test_state_of_another_block_size_is_refused_by_name():
    params = {"w": jnp.ones((4, 4))}
    state = shampoo(learning_rate=0.1, block_size=2).init(params)
    with pytest.raises(ValueError, match=r"\['w'\].*slot 'left'.*\(1, 4, 4\)"):
        shampoo(learning_rate=0.1, block_size=4).update(params, state)


def test_docstring_examples_run():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    objects = {"shampoo_example": shampoo_example, "shampoo": shampoo}
    for name, obj in objects.items():
        for test in finder.find(obj, name, globs=dict(vars(shampoo_example))):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5
    assert result.failed == 0


@pytest.mark.slow  # about 16 s on 2 shared cores, most of it compilation
def test_demo_trains_the_digits_mlp():
    results = shampoo_example.main(epochs=10)
    assert set(results) == {"shampoo", "adam"}
    _, test_loss, accuracy = results["shampoo"]
    assert accuracy > 0.9
    assert test_loss < 0.3
