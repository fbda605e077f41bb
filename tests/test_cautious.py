"""jr.cautious: the mask and its scale, C-Lion against pytorch-optimizer, the kit."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing
from tests import cautious_reference as ref


def _c_lion(case: dict[str, float]) -> optax.GradientTransformationExtraArgs:
    return optax.chain(
        jr.cautious(
            optax.scale_by_lion(b1=case["b1"], b2=case["b2"]), direction="gradient"
        ),
        optax.add_decayed_weights(case["weight_decay"]),
        optax.scale_by_learning_rate(case["lr"]),
    )  # pyright: ignore[reportReturnType]


def _trajectory(tx: optax.GradientTransformation) -> np.ndarray:
    w0, a, b = ref.problem()
    params = [jnp.asarray(w) for w in w0]
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = [
            ai * p + bi * jnp.cos(3 * p) for p, ai, bi in zip(params, a, b, strict=True)
        ]
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    rows = []
    for _ in range(ref.STEPS):
        params, state = step(params, state)
        rows.append(np.concatenate([np.ravel(p) for p in params]))
    return np.stack(rows)


def test_the_mask_and_scale_worked_by_hand():
    # u * g: [1, -2, 3, 4] -> components 0 and 3 agree; 4 / (2 + 1) = 4/3.
    u = jnp.array([1.0, -2.0, -3.0, -4.0])
    g = jnp.array([1.0, 1.0, 1.0, -1.0])
    tx = jr.cautious(optax.scale(1.0), direction="gradient")
    out, _ = tx.update(g, tx.init(None))  # identity: u = g
    np.testing.assert_allclose(out, [0.8, 0.8, 0.8, -0.8], rtol=1e-6)
    inner = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda g, s, p=None: (u, s)
    )
    kept, _ = jr.cautious(inner, direction="gradient").update(g, optax.EmptyState())
    np.testing.assert_allclose(kept, [4 / 3, 0.0, 0.0, -16 / 3], rtol=1e-6)
    # descent: the other components are kept, 4 / (2 + 1) again.
    kept, _ = jr.cautious(inner).update(g, optax.EmptyState())
    np.testing.assert_allclose(kept, [0.0, -8 / 3, -4.0, 0.0], rtol=1e-6)


def test_complex_parts_are_components_and_integers_pass_through():
    u = {"c": jnp.array([1.0 + 1.0j, -1.0 + 2.0j]), "i": jnp.array([3, 4])}
    g = {"c": jnp.array([1.0 - 1.0j, 1.0 + 1.0j]), "i": jnp.array([1, 1])}
    inner = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda g_, s, p=None: (u, s)
    )
    out, _ = jr.cautious(inner, direction="gradient").update(g, optax.EmptyState())
    # real parts: 1*1 > 0 kept, -1*1 dropped; imaginary: 1*-1 dropped, 2*1 kept;
    # 4 components, 2 kept: scale 4 / 3.
    np.testing.assert_allclose(out["c"], [4 / 3 + 0j, 0 + 8j / 3], rtol=1e-6)
    np.testing.assert_array_equal(out["i"], u["i"])


@pytest.mark.parametrize("index", range(len(ref.CASES)))
def test_c_lion_matches_pytorch_optimizer_fixture(index):
    with jax.enable_x64(True):
        ours = _trajectory(_c_lion(ref.CASES[index]))
        plain = _trajectory(
            optax.lion(
                ref.CASES[index]["lr"],
                b1=ref.CASES[index]["b1"],
                b2=ref.CASES[index]["b2"],
                weight_decay=ref.CASES[index]["weight_decay"],
            )
        )
    theirs = np.load(ref.FIXTURE)[f"case{index}"]
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() / scale <= 1e-12
    # The mask matters on this problem: plain Lion leaves the reference.
    assert np.abs(plain - theirs).max() / scale > 1e-3


def _authors_adopt() -> optax.GradientTransformation:
    # ADOPT clipped at the 1-based step's quarter root, as the authors' code.
    return jr.adopt(0.01, clip_value_fn=lambda count: (count + 1) ** 0.25)


OTHERS = {
    "ADOPT": (lambda: jr.cautious(_authors_adopt()), _authors_adopt),
    "LaProp": (lambda: jr.cautious(jr.laprop(0.01)), lambda: jr.laprop(0.01)),
}
"""Our cautious rule and its plain rule, per pytorch-optimizer class."""


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_cautious_rules_match_pytorch_optimizer_fixture(name):
    cautious_tx, plain_tx = OTHERS[name]
    with jax.enable_x64(True):
        ours = _trajectory(cautious_tx())
        plain = _trajectory(plain_tx())
    theirs = np.load(ref.FIXTURE)[name]
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() / scale <= 1e-12
    assert np.abs(plain - theirs).max() / scale > 1e-3  # the mask matters


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None
    or importlib.util.find_spec("pytorch_optimizer") is None,
    reason="the live comparison needs torch and pytorch-optimizer",
)
def test_the_fixture_is_what_pytorch_optimizer_computes():
    theirs = ref.torch_trajectory(ref.CASES[1])
    np.testing.assert_array_equal(theirs, np.load(ref.FIXTURE)["case1"])
    for name, kwargs in ref.OTHERS.items():
        theirs = ref.other_trajectory(name, kwargs)
        np.testing.assert_array_equal(theirs, np.load(ref.FIXTURE)[name])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="direction"):
        jr.cautious(optax.identity(), direction="up")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="optax transform"):
        jr.cautious(jr.adam)  # pyright: ignore[reportArgumentType]


def test_the_kit_passes_on_cautious_adam():
    report = testing.check_rule(
        lambda learning_rate=1e-3: jr.cautious(jr.adam(learning_rate)),
        {"learning_rate": 1e-2},
        verbose=False,
    )
    # check_rule raises on a failed check; every check ran.
    assert set(report.ran) == set(testing.CHECKS), report.skipped
