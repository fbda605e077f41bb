"""Bad hyperparameter values get an error naming the hyperparameter (issue 12).

Parametrized over both registries (the catalog, ``jaxopt_rules.REGISTRY``, and
``jaxopt_rules.torch_compat.REGISTRY``), so a newly registered rule is covered
without touching this file.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import build

import jaxopt_rules as jr
from jaxopt_rules import testing, torch_compat


SPECS = (*jr.REGISTRY, *torch_compat.REGISTRY)
IDS = [
    f"{'torch_compat.' if spec in torch_compat.REGISTRY else ''}{spec.name}"
    for spec in SPECS
]
# One matrix leaf: torch_compat.muon takes 2-d parameters only.
PARAMS = {"w": jnp.ones((4, 3))}


def _lr_name(spec) -> str:
    """The step-size argument: optax's ``learning_rate``, torch's ``lr``, or the
    registry's ``schedule_arg`` (``polyak_sgd``: ``scaling``)."""
    if spec.schedule_arg is not None:
        return spec.schedule_arg
    parameters = inspect.signature(spec.factory).parameters
    return "learning_rate" if "learning_rate" in parameters else "lr"


def _loss(params):
    """A loss whose gradient at PARAMS is the ones :func:`_first_update` uses."""
    return jnp.sum(params["w"])


def _build(spec, value):
    tx = build(spec.factory, **{**spec.hyperparams, _lr_name(spec): value})
    return testing.with_update_args(tx, spec.update_args, _loss)


def _first_update(tx, params=PARAMS):
    grads = jax.tree.map(jnp.ones_like, params)
    return tx.update(grads, tx.init(params), params)[0]


# --- 1. learning rates: None, strings, non-numbers, bad schedules -------------


def _takes_none(spec) -> bool:
    """Whether the step size's default is None (optax's adafactor, adadelta)."""
    parameter = inspect.signature(spec.factory).parameters[_lr_name(spec)]
    return parameter.default is None


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if not _takes_none(s)],
    ids=[i for s, i in zip(SPECS, IDS, strict=True) if not _takes_none(s)],
)
def test_learning_rate_none_names_the_argument(spec):
    name = _lr_name(spec)
    with pytest.raises(TypeError, match=rf": {name} is None; pass a number"):
        _first_update(_build(spec, None))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("text", ["1e-3", "0.001"])
def test_learning_rate_numeric_string_is_refused(spec, text):
    """A YAML config reads ``1e-3`` as a string: refused even though it parses."""
    name = _lr_name(spec)
    with pytest.raises(
        TypeError, match=rf"{name} must be .* got the string '{text}'; pass a float"
    ):
        _build(spec, text)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    ("value", "described"),
    [("fast", r"the string 'fast'"), ([1e-3], r"a list"), (object(), r"an object")],
    ids=["word", "list", "object"],
)
def test_learning_rate_non_numeric_is_refused(spec, value, described):
    with pytest.raises(
        TypeError, match=rf"{_lr_name(spec)} must be .* got {described}"
    ):
        _build(spec, value)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_schedule_returning_none_names_the_hyperparameter(spec):
    name = _lr_name(spec)
    with pytest.raises(TypeError, match=rf"the schedule given as {name} returned None"):
        _first_update(_build(spec, lambda count: None))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_schedule_returning_a_vector_names_the_hyperparameter(spec):
    """Shape (3,) broadcasts against the (4, 3) leaf: it must not pass silently."""
    name = _lr_name(spec)
    with pytest.raises(
        ValueError,
        match=rf"the schedule given as {name} returned an array of shape \(3,\)",
    ):
        _first_update(_build(spec, lambda count: jnp.full(3, 1e-3)))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_schedule_checked_at_trace_time_inside_update(spec):
    """A schedule that goes wrong after init fails when update is traced under jit."""
    name = _lr_name(spec)
    state = _build(spec, 1e-3).init(PARAMS)
    bad = _build(spec, lambda count: jnp.full(3, 1e-3) * count)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    with pytest.raises(ValueError, match=rf"schedule given as {name} returned an"):
        jax.jit(bad.update)(grads, state, PARAMS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    "value",
    [1, np.float32(1e-3), jnp.asarray(1e-3), optax.constant_schedule(1e-3)],
    ids=["int", "numpy", "jax", "schedule"],
)
def test_numeric_learning_rates_still_work(spec, value):
    update = _first_update(_build(spec, value))
    assert update["w"].shape == PARAMS["w"].shape
    assert bool(jnp.all(jnp.isfinite(update["w"])))


def test_string_through_inject_hyperparams_names_the_hyperparameter():
    tx = optax.inject_hyperparams(jr.adam)(learning_rate="1e-3")
    with pytest.raises(TypeError, match=r"adam: learning_rate .* string '1e-3'"):
        tx.init(PARAMS)


def test_non_numeric_other_hyperparameter():
    with pytest.raises(TypeError, match=r"adam: b1 must be .* got the string '0.9'"):
        jr.adam(1e-3, b1="0.9")
    with pytest.raises(TypeError, match=r"torch_adam: weight_decay is None"):
        torch_compat.adam(lr=1e-3, weight_decay=None)


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (jr.sgd, {"learning_rate": 0.1, "momentum": None}),
        (jr.rmsprop, {"learning_rate": 0.1, "momentum": None}),
        (jr.adamw, {"learning_rate": 0.1, "mask": None}),
        (torch_compat.adafactor, {"lr": 0.1, "eps": (None, 1e-3)}),
    ],
    ids=["sgd-momentum", "rmsprop-momentum", "adamw-mask", "torch-adafactor-eps1"],
)
def test_hyperparameters_that_take_none_still_do(factory, kwargs):
    assert _first_update(factory(**kwargs))["w"].shape == PARAMS["w"].shape


def test_none_and_strings_admitted_by_the_signature():
    """A rule admits None by a default of None, strings by an annotation."""

    @jr.rule
    def signed_or_scaled(
        grad, *, learning_rate, mode: str = "sign", clip: float | None = 1.0
    ):
        direction = jnp.sign(grad) if mode == "sign" else grad
        if clip is not None:
            direction = jnp.clip(direction, -clip, clip)
        return -learning_rate * direction

    update = _first_update(signed_or_scaled(0.5, mode="sign", clip=None))
    np.testing.assert_array_equal(update["w"], -0.5 * np.ones((4, 3)))

    @jr.rule
    def unannotated(grad, *, learning_rate, mode="sign"):
        return -learning_rate * grad

    with pytest.raises(TypeError, match=r"mode must be .* got the string 'sign'"):
        unannotated(0.5)


# --- 2. per-leaf masks: given per element, or traced ---------------------------

MASKED = [spec for spec in jr.REGISTRY if "mask" in spec.factory.static_args]
TREE = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}


@pytest.mark.parametrize("spec", MASKED, ids=lambda s: s.name)
def test_mask_given_per_element_names_the_leaf(spec):
    """optax.masked takes one bool per leaf too (an array fails in its ``if m``)."""
    mask = {"w": np.ones((2, 3), bool), "b": False}
    with pytest.raises(
        ValueError, match=rf"{spec.name}: mask\['w'\] is an array of shape \(2, 3\)"
    ):
        spec.factory(learning_rate=1e-3, mask=mask)


@pytest.mark.parametrize("spec", MASKED, ids=lambda s: s.name)
def test_mask_traced_under_jit_names_the_leaf(spec):
    @jax.jit
    def step(decay_w):
        tx = spec.factory(learning_rate=1e-3, mask={"w": decay_w, "b": False})
        return tx.update(TREE, tx.init(TREE), TREE)[0]

    with pytest.raises(TypeError, match=r"mask\['w'\] is a traced value"):
        step(jnp.asarray(True))


def test_mask_injected_by_optax_without_static_args():
    tx = optax.inject_hyperparams(jr.adamw)(learning_rate=1e-3, mask=jnp.asarray(True))
    state = tx.init(TREE)
    with pytest.raises(TypeError, match=r"adamw: mask is a traced value"):
        jax.jit(tx.update)(TREE, state, TREE)


def test_mask_that_is_not_a_bool():
    with pytest.raises(TypeError, match=r"mask\['b'\] must be a bool, got the string"):
        jr.adamw(1e-3, mask={"w": True, "b": "no"})


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False},
        {"w": jnp.asarray(True), "b": np.bool_(False)},
        {"w": np.array([True]), "b": 0},
    ],
    ids=["bools", "scalar-arrays", "size-one-and-int"],
)
def test_masks_optax_accepts_still_work(mask):
    """Per-leaf bools, as scalar arrays or size-one arrays too, as in optax."""
    tx = jr.adamw(0.1, weight_decay=0.5, mask=mask)
    zeros = jax.tree.map(jnp.zeros_like, TREE)
    updates = jax.jit(tx.update)(zeros, tx.init(TREE), TREE)[0]
    np.testing.assert_allclose(updates["w"], -0.05)
    np.testing.assert_array_equal(updates["b"], 0.0)


def test_mask_injected_with_static_args_still_works():
    tx = jr.inject_hyperparams(jr.adamw)(
        learning_rate=0.1, weight_decay=0.5, mask={"w": True, "b": False}
    )
    zeros = jax.tree.map(jnp.zeros_like, TREE)
    updates = jax.jit(tx.update)(zeros, tx.init(TREE), TREE)[0]
    np.testing.assert_allclose(updates["w"], -0.05)
    np.testing.assert_array_equal(updates["b"], 0.0)


def test_mask_function_returning_per_element_masks_names_the_leaf():
    tx = jr.adamw(1e-3, mask=lambda grads: jax.tree.map(lambda g: g > 0, grads))
    with pytest.raises(ValueError, match=r"adamw: mask\['b'\] is an array of shape"):
        tx.update(TREE, tx.init(TREE), TREE)


# --- 3. rounding seeds that do not fit the key ---------------------------------


@pytest.mark.parametrize("seed", [2**70, 2**32, -1, np.uint64(2**63)])
def test_rounding_seed_out_of_range_names_the_argument(seed):
    with pytest.raises(
        ValueError, match=r"adam: rounding_seed=-?\d+ does not fit the rounding key"
    ):
        jr.adam(1e-3, mu_dtype="bfloat16", stochastic_rounding=True, rounding_seed=seed)


def test_rounding_seeds_in_range_give_distinct_keys():
    def key(seed):
        tx = jr.adam(
            1e-3, mu_dtype="bfloat16", stochastic_rounding=True, rounding_seed=seed
        )
        return tuple(np.asarray(tx.init(PARAMS).rounding_key).tolist())

    keys = {key(seed) for seed in (0, 1, 2**31, 2**32 - 1)}
    assert len(keys) == 4


# --- 5. low-range storage dtypes for squared quantities ------------------------


@jr.rule(slots={"sum_sq": jr.Slot(square=True)})
def _adagrad_like(grad, sum_sq, *, learning_rate, eps=1e-8):
    sum_sq = sum_sq + grad * grad
    return -learning_rate * grad / (jnp.sqrt(sum_sq) + eps), sum_sq


def test_float16_refused_for_a_square_slot():
    with pytest.raises(
        ValueError,
        match=r"_adagrad_like: sum_sq_dtype=float16 cannot store slot 'sum_sq'.*"
        r"underflow.*Use bfloat16 .* or float32",
    ):
        _adagrad_like(0.1, sum_sq_dtype=jnp.float16)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, None])
def test_wide_range_dtypes_accepted_for_a_square_slot(dtype):
    tx = _adagrad_like(0.1, sum_sq_dtype=dtype)
    grads = {"w": jnp.full((4, 3), 1e-3)}
    updates = tx.update(grads, tx.init(PARAMS))[0]
    # sum_sq = 1e-6 is held (bfloat16: to 3 digits), so the step is -lr.
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-2)


def test_adam_nu_float16_is_refused():
    """Today's numbers: |g| = 1e-3, lr = 1e-3 gives a first step of -100."""
    with pytest.raises(ValueError, match=r"adam: nu_dtype=float16 cannot store"):
        jr.adam(1e-3, nu_dtype=jnp.float16)


def test_adam_nu_bfloat16_first_step_is_right():
    """The alternative the message offers: bfloat16 holds the square of 1e-3."""
    tx = jr.adam(1e-3, nu_dtype=jnp.bfloat16)
    updates = tx.update({"w": jnp.full((4, 3), 1e-3)}, tx.init(PARAMS))[0]
    np.testing.assert_allclose(updates["w"], -1e-3, rtol=1e-2)


SQUARE_ARGS = [
    (spec, rule.definition.dtype_args[slot])
    for spec in jr.REGISTRY
    for rule in [spec.factory]
    for slot, option in rule.definition.slots
    if option.square
    and rule.definition.dtype_args[slot] in inspect.signature(spec.factory).parameters
]


@pytest.mark.parametrize(
    ("spec", "arg"), SQUARE_ARGS, ids=[f"{s.name}-{a}" for s, a in SQUARE_ARGS]
)
def test_float16_refused_for_every_square_slot_of_the_catalog(spec, arg):
    with pytest.raises(ValueError, match=rf"{arg}=float16 cannot store slot"):
        spec.factory(**{**spec.hyperparams, arg: jnp.float16})


# --- 6. 8-bit (and narrower) float storage dtypes ------------------------------

DTYPE_ARGS = [
    (spec, name)
    for spec in jr.REGISTRY
    for name in inspect.signature(spec.factory).parameters
    if name.endswith("_dtype")
]
FLOAT8 = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3b11fnuz", "float4_e2m1fn"]


@pytest.mark.parametrize(
    ("spec", "arg"), DTYPE_ARGS, ids=[f"{s.name}-{a}" for s, a in DTYPE_ARGS]
)
@pytest.mark.parametrize("dtype", FLOAT8)
def test_sub_16_bit_float_storage_is_refused(spec, arg, dtype):
    """They ran and returned wrong numbers (0 moments, NaN for e4m3b11fnuz)."""
    with pytest.raises(
        TypeError, match=rf"{arg}={dtype} is not supported.*quantized_state"
    ):
        spec.factory(**{**spec.hyperparams, arg: getattr(jnp, dtype)})


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if _takes_none(s)],
    ids=[i for s, i in zip(SPECS, IDS, strict=True) if _takes_none(s)],
)
def test_learning_rate_none_where_it_is_the_default(spec):
    """Where None is the documented default (a rule's own step size), it works."""
    update = _first_update(_build(spec, None))
    assert bool(jnp.all(jnp.isfinite(update["w"])))
    assert bool(jnp.any(update["w"] != 0))
