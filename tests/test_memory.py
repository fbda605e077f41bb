"""Memory: no parameter-sized temporaries; low-precision slots read as stored."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from helpers import build

import jaxopt_rules as jr
from jaxopt_rules import testing


def _dtype_args(spec: jr.RuleSpec) -> list[str]:
    return [a for a in spec.static_args if a.endswith("_dtype")]


# Rules whose step XLA:CPU compiles with a parameter-sized temporary, and why.
# A strict xfail: the day one of them stops allocating it, the test says so.
_KNOWN_TEMPORARIES = {
    "lion": (
        "the update reads the old moment, which the state update overwrites in "
        "place; without multi-output fusion XLA:CPU copies the moment first "
        "(optax.lion too; see benchmarks/NOTES.md)"
    ),
    # A "<rule>-<state>" key: that state dtype only.
    "adabelief-float32": (
        "the parameter update recomputes s_t + eps_root from the old second "
        "moment, which the state update overwrites in place; XLA:CPU copies it "
        "first (optax.adabelief too; a bfloat16 slot is read as stored: no copy)"
    ),
    "cocob-float32": (
        "XLA:CPU keeps one parameter-sized float32 temporary in the step "
        "(4 bytes per parameter, optax.contrib.cocob the same); with bfloat16 "
        "slots, read as stored, it does not"
    ),
    "adopt": (
        "the step normalises the gradient by the old second moment, which the "
        "state update overwrites in place; XLA:CPU copies it first "
        "(optax.contrib.adopt too)"
    ),
    "acprop": (
        "the step reads the old first and second moments, which the state "
        "update overwrites in place; XLA:CPU copies them first "
        "(optax.contrib.acprop too)"
    ),
    "rprop": (
        "the step applies the previously proposed step, which the state update "
        "overwrites in place; XLA:CPU copies it first (optax.rprop too)"
    ),
    "adan": (
        "the step subtracts the previous gradient, whose slot the state update "
        "overwrites in place with the new gradient; XLA:CPU copies it first "
        "(optax.adan too)"
    ),
    "optimistic_gradient_descent": (
        "the step reads the previous gradient, which the state update "
        "overwrites in place; XLA:CPU copies it first "
        "(optax.optimistic_gradient_descent too)"
    ),
    "optimistic_adam": (
        "the step reads the previous direction, which the state update "
        "overwrites in place; XLA:CPU copies it first (optax.optimistic_adam too)"
    ),
    "optimistic_adam_v2": (
        "the step reads the previous direction, which the state update "
        "overwrites in place; XLA:CPU copies it first (optax.optimistic_adam_v2 too)"
    ),
    "lars": (
        "the trust ratio needs the norm of the decayed gradient g + wd * theta "
        "before it is scaled, so XLA materialises it once (optax.lars: twice)"
    ),
    "sm3": (
        "the accumulated squares A = min(row, column accumulators) + g**2 are "
        "read by the two axis maxima (reductions over the whole matrix) and "
        "by the step, so XLA materialises them (optax.sm3 too: 3.98 bytes "
        "per parameter there, 4.01 here)"
    ),
    "adadelta": (
        "the step reads the old average of squared steps, which the state "
        "update overwrites in place; XLA:CPU copies the averages first "
        "(optax.adadelta too: 8 bytes per parameter there, 12 here)"
    ),
    "adafactor": (
        "the clipping and the parameter scale need root mean squares of whole "
        "leaves before the step is scaled, so XLA materialises the step "
        "(optax.adafactor too)"
    ),
    "lamb": (
        "the trust ratio needs the norm of the whole update before the update "
        "is scaled, so XLA materialises the update once (optax.lamb: twice)"
    ),
    "dadapt_adamw": (
        "the tree-wide sums read the old sum s and second moment, which the "
        "state update (which does not wait for the sums) overwrites in place; "
        "XLA:CPU copies both first: 8 bytes per parameter, as "
        "optax.contrib.dadapt_adamw (18 with bfloat16 slots)"
    ),
    "momo_adam": (
        "the step size needs <m_t, m_t / D_t> over the whole tree before the "
        "step is scaled, so XLA materialises the new moments: 8 bytes per "
        "parameter, as optax.contrib.momo_adam (16 with bfloat16 slots)"
    ),
    "schedule_free_sgd": (
        "the step recovers the average x from the parameters and the old z, "
        "which the state update overwrites in place; XLA:CPU copies z first: "
        "4 bytes per parameter, as optax.contrib.schedule_free_sgd (2 with a "
        "bfloat16 z)"
    ),
    "schedule_free_adamw": (
        "the step reads the old z (to recover the average x) and recomputes "
        "the new second moment from the old one, both overwritten in place; "
        "XLA:CPU copies both first: 8 bytes per parameter, optax's "
        "schedule_free_adamw 4 (10 with bfloat16 state)"
    ),
    "prodigy-bfloat16": (
        "the sum |s_t|_1 is taken over the float32 value of the new slot, which "
        "is also stored rounded to bfloat16: XLA materialises it once (4 bytes "
        "per parameter; float32 slots: none, as optax.contrib.prodigy)"
    ),
}
_KNOWN_TEMPORARIES["galore"] = (
    "the SVD of the 256 x 512 gradient: LAPACK's float32 copy of it and its "
    "workspace, 10.0 bytes per parameter (optax.contrib.galore: the same 9.97)"
)
_KNOWN_TEMPORARIES["sophia"] = (
    "the Hessian-vector product of the loss (the Rademacher signs, their "
    "random bits, the tangents of the loss's intermediates): 16.0 bytes per "
    "parameter for this sum of sines, 18.0 with bfloat16 slots "
    "(optax.contrib.sophia: 16.0 and 18.0)"
)
_KNOWN_TEMPORARIES["sophia_g"] = (
    "the Gauss-Newton-Bartlett estimate is a gradient (of the loss at labels "
    "sampled from the model), which the step squares into the Hessian "
    "average: one float32 copy of the parameters, 4.0 bytes per parameter "
    "(the same with bfloat16 slots)"
)
_KNOWN_TEMPORARIES["dpsgd"] = (
    "per-example clipping and noise: XLA:CPU materialises the examples' "
    "multiplied sum (4 bytes per parameter) and the threefry random bits and "
    "normal draws (16): 20.0 bytes per parameter, whether the batch of "
    "examples is an input or made in the step (optax.contrib.dpsgd: the same "
    "20.0)"
)
_KNOWN_TEMPORARIES["lbfgs"] = (
    "the parameters and the gradient kept for the next step's differences, "
    "and the line search's trial point and gradient: 12.1 bytes per "
    "parameter without the line search (optax.lbfgs: 20.0), 16.1 with it "
    "(optax.lbfgs: 24.0)"
)
_KNOWN_TEMPORARIES["muon"] = (
    "the Newton-Schulz iterations on the 256 x 512 matrix: X X^T, its square "
    "and the products, 29.9 bytes per parameter (optax.contrib.muon: the same)"
)
_KNOWN_TEMPORARIES["noisy_sgd"] = (
    "the normal draws: XLA:CPU materialises the threefry random bits and the "
    "normals made of them, 16 bytes per parameter (optax.noisy_sgd: the same "
    "15.98)"
)
_KNOWN_TEMPORARIES["momo-bfloat16"] = (
    "|m_t|**2 and <m_t, theta> are taken over the float32 value of the new "
    "moment, which is also stored rounded to bfloat16: XLA materialises it "
    "once (4 bytes per parameter; float32 slots: none, as optax.contrib.momo)"
)
_KNOWN_TEMPORARIES["schedule_free_radam"] = (
    "as schedule_free_adamw: the step reads the old z (to recover the "
    "average x) and the old second moment, both overwritten in place; XLA:CPU "
    "copies both first: 8.0 bytes per parameter (6.0 with bfloat16 slots, "
    "10.0 with stochastic rounding)"
)
_KNOWN_TEMPORARIES["came"] = (
    "as adafactor: the clipping needs the RMS of each leaf's normalised step "
    "before the step is scaled, so XLA materialises the step, 4.0 bytes per "
    "parameter (the same with bfloat16 slots; the authors' code allocates it "
    "too)"
)
_KNOWN_TEMPORARIES["spam"] = (
    "the spike clip reads the old second moment, and both new moments are "
    "made from the clipped gradient: XLA:CPU copies the old moment before "
    "the second moment's update overwrites it in place, 4.0 bytes per "
    "parameter (as for adopt); without clipping (threshold 0) there is none"
)
_KNOWN_TEMPORARIES["soap"] = (
    "the gradient and the first moment are rotated into the eigenbases and "
    "the step rotated back, one tensordot per axis each, and the factors "
    "are eigendecomposed or orthonormalised in a lax.switch whose branches "
    "make new bases: 49.8 bytes per parameter on the test's 256 x 512 "
    "matrix (its two factors and bases alone are 10 bytes per parameter), "
    "55.8 with bfloat16 factors; the reference allocates the same rotations"
)
_KNOWN_TEMPORARIES["psgd_kron"] = (
    "the factors' fit makes two Gram matrices per axis, their sum, its "
    "lower-bounded norm and the triangular step and product, each the size "
    "of a factor (256 x 256 and 512 x 512 for the test's matrix: 2.5 "
    "numbers per parameter), and solves against each factor: 49.9 bytes per "
    "parameter, 53.9 with bfloat16 slots; psgd-jax makes the same matrices"
)
_KNOWN_TEMPORARIES["shampoo"] = (
    "the leaf is cut into a stack of zero-padded blocks, each block's "
    "factors get a new Gram matrix per axis and, behind lax.cond, an "
    "eigendecomposition, and the blocks are multiplied by their roots and "
    "put back together: 41.8 bytes per parameter on the test's 256 x 512 "
    "matrix in blocks of 2 (the kit's hyperparameters: 32,768 blocks whose "
    "factors and roots alone are 16 bytes per parameter), the same with "
    "bfloat16 slots, 49.8 with stochastic rounding; the reference allocates "
    "the same blocks, Gram matrices and products"
)
_KNOWN_TEMPORARIES["mars"] = (
    "each matrix's corrected gradient is clipped to norm 1, so its norm is "
    "needed before any element of it is used: XLA:CPU materialises the "
    "correction, 4.0 bytes per parameter (8.0 with bfloat16 slots), as the "
    "reference (pytorch_optimizer.MARS) allocates its c_t. Measured with the "
    "previous gradient left unchanged too: the same 4.0"
)
_KNOWN_TEMPORARIES["cautious_adamw"] = (
    "the mask's mean (the kept fraction) is needed before any element of the "
    "step: XLA:CPU's reduction reads the mask from a materialised float32 "
    "array, 4.0 bytes per parameter (the same counted in int32 or as "
    "max(sign, 0): 4.0 and 8.0), as the reference (timm's AdamWLegacy with "
    "caution) allocates its mask"
)
for _rule in ("prodigy", "momo"):
    _KNOWN_TEMPORARIES[f"{_rule}-bfloat16-stochastic"] = _KNOWN_TEMPORARIES[
        f"{_rule}-bfloat16"
    ]


def _known_temporary(name: str, state: str) -> str | None:
    return _KNOWN_TEMPORARIES.get(f"{name}-{state}", _KNOWN_TEMPORARIES.get(name))


_CASES = [
    pytest.param(
        spec,
        state,
        id=f"{spec.name}-{state}",
        marks=[
            pytest.mark.xfail(strict=True, reason=_known_temporary(spec.name, state))
        ]
        if _known_temporary(spec.name, state)
        else [],
    )
    for spec in jr.REGISTRY
    for state in ("float32", "bfloat16", "bfloat16-stochastic")
    if state == "float32" or _dtype_args(spec)
]


def _loss(params):
    return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize(("spec", "state"), _CASES)
def test_step_allocates_no_parameter_sized_temporary(spec, state):
    params = {"w": jnp.zeros((256, 512)), "b": jnp.zeros((512,))}
    n = 256 * 512 + 512
    kwargs = dict(spec.hyperparams)
    if state != "float32":
        kwargs |= {a: jnp.bfloat16 for a in _dtype_args(spec)}
    if state == "bfloat16-stochastic":
        kwargs["stochastic_rounding"] = True
    tx = build(spec.factory, **kwargs)
    # The loss value, for rules that read it: a scalar input; functions of
    # the parameters (sophia's obj_fn, sophia_g's logits_fn), for rules that
    # differentiate them: of a sum of sines, part of the program.
    functions = testing.loss_functions(spec.update_args, _loss)
    # The gradient (L-BFGS's line search reads it): the gradient input.
    extra = {
        n: jnp.zeros(()) for n in spec.update_args if n not in functions and n != "grad"
    }
    takes_grad = "grad" in spec.update_args

    def step(params, opt_state, grads, extra):
        extra = {**extra, "grad": grads} if takes_grad else extra
        updates, opt_state = tx.update(grads, opt_state, params, **extra, **functions)
        return optax.apply_updates(params, updates), opt_state

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, jax.eval_shape(tx.init, params), params, extra)
        .compile()
    )
    temp = compiled.memory_analysis().temp_size_in_bytes
    # A copy of the largest leaf in any dtype of at least one byte is >= n/1.
    assert temp < n, f"{temp} bytes of temporaries for {n} parameters"


def test_low_precision_slots_are_read_as_stored():
    """The update is computed from the new moments rounded to their storage."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(64).astype(np.float32)
    grads = [rng.standard_normal(64).astype(np.float32) for _ in range(3)]
    tx = jr.adam(0.1, mu_dtype=jnp.float16, nu_dtype=jnp.bfloat16)
    state = tx.init({"w": jnp.asarray(p)})
    # Eager NumPy reference: float32 arithmetic, storage rounding after each
    # moment update, the update from the rounded moments.
    b1, b2, lr, eps = np.float32(0.9), np.float32(0.999), np.float32(0.1), 1e-8
    # (float16 is refused for nu, which holds squares: see test_bad_hyperparameters)
    mu = np.zeros(64, np.float16)
    nu = np.zeros(64, ml_dtypes.bfloat16)
    for t, g in enumerate(grads, start=1):
        mu = (b1 * mu.astype(np.float32) + (1 - b1) * g).astype(np.float16)
        nu = (b2 * nu.astype(np.float32) + (1 - b2) * g * g).astype(ml_dtypes.bfloat16)
        mu_hat = mu.astype(np.float32) / (1 - b1 ** np.float32(t))
        nu_hat = nu.astype(np.float32) / (1 - b2 ** np.float32(t))
        expected = -lr * mu_hat / (np.sqrt(nu_hat) + np.float32(eps))
        updates, state = jax.jit(tx.update)({"w": jnp.asarray(g)}, state)
        np.testing.assert_allclose(updates["w"], expected, rtol=2e-6, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(state.mu["w"]), mu)
        np.testing.assert_array_equal(np.asarray(state.nu["w"]), nu)


def test_float32_slots_are_not_rounded():
    """With slots in the compute dtype the rule runs exactly as written."""
    params = {"w": jnp.linspace(-1.0, 1.0, 8)}
    grads = {"w": jnp.linspace(0.3, -0.2, 8)}
    ours = jr.adam(0.1)
    ref = optax.adam(jnp.float32(0.1), b1=jnp.float32(0.9), b2=jnp.float32(0.999))
    u1, _ = ours.update(grads, ours.init(params))
    u2, _ = ref.update(grads, ref.init(params))
    np.testing.assert_array_equal(u1["w"], u2["w"])


def test_user_rule_with_low_precision_slot_and_unchanged_slot():
    @jr.rule(slots={"frozen": jr.Slot(init=1.0)})
    def keeps_one(grad, trace, frozen, *, learning_rate, decay=0.5):
        trace = decay * trace + grad
        return -learning_rate * trace * frozen, trace, frozen

    tx = keeps_one(1.0, trace_dtype=jnp.bfloat16, frozen_dtype=jnp.bfloat16)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    g = jnp.array([1.0, 1 / 3, 1e-3])
    updates, state = jax.jit(tx.update)({"w": g}, state)
    stored = g.astype(jnp.bfloat16)
    np.testing.assert_array_equal(updates["w"], -stored.astype(jnp.float32))
    np.testing.assert_array_equal(state.trace["w"], stored)
    np.testing.assert_array_equal(state.frozen["w"], jnp.ones(3, jnp.bfloat16))


def test_tree_bytes():
    tree = {
        "a": jnp.zeros((3, 4), jnp.float32),
        "b": np.zeros(5, np.float16),
        "c": jax.ShapeDtypeStruct((2, 2), jnp.bfloat16),
        "d": None,
        "e": 3.0,
        "f": optax.MaskedNode(),
    }
    assert jr.tree_bytes(tree) == 48 + 10 + 8
    assert jr.tree_bytes(jax.eval_shape(jr.lion(1e-3).init, {"w": jnp.zeros(10)})) == 44
