"""Writing a rule once: the public signature, grouped and ignored arguments, extra args.

A catalog rule is one decorated per-leaf function: ``rule(positional=...,
grouped=..., ignored=...)`` gives its factory another library's exact signature,
and the function's name and docstring are the factory's. Rules that need more
than the gradient declare ``extra_args`` and receive them from ``update``.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr


P = inspect.Parameter


# Catalog rules whose factory wraps one rule in tree-level work the per-leaf
# core cannot express, each saying why in its docstring.
COMPOSITES = {
    "sophia": "Hessian-vector product of the whole loss",
    "dpsgd": "its norm over every leaf of the tree",
    "lbfgs": "a recursion of inner products over the whole tree",
    "sophia_g": "a gradient of the whole model's loss at labels sampled",
    "psgd_kron": "one decision for the whole tree per step",
}


def test_catalog_rules_are_one_definition():
    """The public factory is the decorated function: its name, docs and module.

    The composites listed above are one rule function too, wrapped by a build
    function whose docstring says why it is not one rule function.
    """
    for spec in jr.REGISTRY:
        if spec.name in COMPOSITES:
            assert isinstance(spec.factory, jr.CompositeFactory), spec.name
            assert isinstance(spec.factory.rule, jr.RuleFactory), spec.name
            doc = spec.factory.__doc__ or ""
            assert "Why this is not one rule function" in doc, spec.name
            assert COMPOSITES[spec.name] in " ".join(doc.split()), spec.name
        else:
            assert isinstance(spec.factory, jr.RuleFactory), spec.name
        assert spec.factory.__name__ == spec.name
        assert spec.factory.__module__.startswith("jaxopt_rules.rules.")
        assert "Args:" in (spec.factory.__doc__ or "")


@jr.rule(
    slots={"mu": jr.Slot()},
    positional=("learning_rate", "b", "mu_dtype"),
)
def _heavy_ball(grad, mu, *, learning_rate, b=0.9, nesterov=False):
    """Heavy ball. Args: learning_rate, b, mu_dtype, nesterov."""
    mu = b * mu + grad
    return -learning_rate * (grad + b * mu if nesterov else mu), mu


def test_positional_order_and_kinds():
    params = inspect.signature(_heavy_ball).parameters
    assert list(params)[:3] == ["learning_rate", "b", "mu_dtype"]
    assert [params[n].kind for n in ("learning_rate", "b", "mu_dtype")] == [
        P.POSITIONAL_OR_KEYWORD
    ] * 3
    for name in ("nesterov", "stochastic_rounding", "rounding_seed"):
        assert params[name].kind is P.KEYWORD_ONLY
    # Positional binding reaches the right hyperparameters.
    tx = _heavy_ball(0.5, 0.0, jnp.bfloat16)
    state = tx.init({"w": jnp.ones(2)})
    assert state.mu["w"].dtype == jnp.bfloat16
    updates, _ = tx.update({"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(updates["w"], -0.5)
    with pytest.raises(TypeError, match=r"_heavy_ball\(\): too many positional"):
        _heavy_ball(0.5, 0.0, None, True)


def test_positional_names_are_checked_at_decoration():
    with pytest.raises(TypeError, match=r"positional names \['nope'\]"):
        jr.rule(positional=("learning_rate", "nope"))(
            lambda grad, *, learning_rate: grad
        )
    with pytest.raises(TypeError, match=r"'learning_rate' has no default but follows"):
        jr.rule(positional=("b", "learning_rate"))(
            lambda grad, *, learning_rate, b=1.0: grad
        )


@jr.rule(
    slots={"m": jr.Slot(), "v": jr.Slot()},
    positional=("lr", "betas", "foreach"),
    grouped={"betas": ("beta1", "beta2")},
    ignored={"foreach": None, "fused": None},
    constraints={"beta1": "[0, 1)", "beta2": "[0, 1)"},
)
def _torch_like(grad, m, v, *, lr=1e-3, beta1=0.9, beta2=0.999):
    """A torch-style signature: betas packed, execution flags ignored."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return -lr * m / (jnp.sqrt(v) + 1e-8), m, v


def test_grouped_and_ignored_arguments():
    params = inspect.signature(_torch_like).parameters
    assert list(params)[:3] == ["lr", "betas", "foreach"]
    assert params["betas"].default == (0.9, 0.999)
    assert params["fused"].kind is P.KEYWORD_ONLY
    assert "beta1" not in params
    grads = {"w": jnp.array([2.0, -1.0])}
    tx = _torch_like(0.1, (0.5, 0.75), True, fused=None)
    _, state = tx.update(grads, tx.init(grads))
    # m = (1 - 0.5) g, v = (1 - 0.75) g^2: the pair reached beta1 and beta2.
    np.testing.assert_allclose(state.m["w"], 0.5 * np.array([2.0, -1.0]))
    np.testing.assert_allclose(state.v["w"], 0.25 * np.array([4.0, 1.0]))


def test_grouped_and_ignored_arguments_are_checked():
    with pytest.raises(ValueError, match=r"betas must be a pair of numbers"):
        _torch_like(0.1, (0.9,))
    with pytest.raises(ValueError, match=r"beta2"):
        _torch_like(0.1, (0.9, 1.5))
    with pytest.raises(TypeError, match=r"fused must be None or a bool"):
        _torch_like(0.1, fused="yes")


@jr.rule(extra_args=("value",), constraints={"max_lr": "> 0"})
def _polyak(grad, value, *, max_lr=1.0, eps=1e-12):
    """Polyak's step size ``value / ||g||^2`` per leaf, capped at ``max_lr``."""
    step = jnp.minimum(value / (jnp.sum(grad * grad) + eps), max_lr)
    return -step * grad


def test_extra_argument_shared_by_every_leaf():
    grads = {"a": jnp.array([1.0, 1.0]), "b": jnp.array([2.0])}
    tx = _polyak()
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads), value=jnp.float32(0.5))
    np.testing.assert_allclose(updates["a"], -0.25 * np.ones(2))
    np.testing.assert_allclose(updates["b"], [-0.25])
    # Through optax.chain, which hands extra arguments to every transform.
    # (tx sees g = 4: a step of 0.5 / 16 along it.)
    chained = optax.chain(optax.scale(2.0), tx)
    updates, _ = chained.update(grads, chained.init(grads), value=0.5)
    np.testing.assert_allclose(updates["b"], [-0.125])


def test_missing_extra_argument_is_named():
    grads = {"a": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"_polyak: this rule needs 'value'"):
        _polyak().update(grads, _polyak().init(grads))


@jr.rule(extra_args=("hessian",))
def _newton_diagonal(grad, hessian, *, learning_rate, eps=1e-3):
    """A diagonal Newton step from a per-leaf Hessian estimate."""
    return -learning_rate * grad / (jnp.abs(hessian) + eps)


def test_extra_argument_given_per_leaf():
    grads = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    hessian = {"a": jnp.array([2.0, 4.0]), "b": jnp.array(0.5)}
    tx = _newton_diagonal(1.0, eps=0.0)
    updates, _ = tx.update(grads, tx.init(grads), hessian=hessian)
    np.testing.assert_allclose(updates["a"], [-0.5, -0.5])
    np.testing.assert_allclose(updates["b"], -6.0)
    with pytest.raises(ValueError, match=r"extra argument 'hessian' must be one"):
        tx.update(grads, tx.init(grads), hessian={"a": jnp.ones(2)})


def test_extra_argument_must_be_a_positional_parameter():
    with pytest.raises(TypeError, match=r"extra argument 'value' must be a positional"):
        jr.rule(extra_args=("value",))(lambda grad, *, value: grad)


@jr.rule(
    slots={
        "gram": jr.Slot(shape=lambda shape, hyper: (hyper["block"], hyper["block"])),
        "root": jr.Slot(shape=lambda shape, hyper: (hyper["block"], hyper["block"])),
    },
    static=("block", "every"),
    constraints={"block": ">= 1", "every": ">= 1"},
)
def _refreshed(grad, gram, root, step, *, learning_rate, block=2, every=3):
    """A slot shaped by a static hyperparameter, refreshed every k steps by cond."""
    head = grad.reshape(-1)[:block]
    gram = gram + jnp.outer(head, head)
    root = jax.lax.cond(
        (step.astype(jnp.int32) - 1) % every == 0,
        lambda: gram + 0.0,
        lambda: root,
    )
    return -learning_rate * grad * jnp.trace(root), gram, root


def test_slot_shape_from_a_static_hyperparameter_and_a_refresh_behind_cond():
    params = {"w": jnp.ones((3, 2))}
    tx = _refreshed(0.1, block=2, every=3)
    state = tx.init(params)
    assert state.gram["w"].shape == state.root["w"].shape == (2, 2)
    update = jax.jit(tx.update)
    traces = []
    for _ in range(5):
        _, new_state = update(params, state)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        state = new_state
        traces.append(float(jnp.trace(state.root["w"])))
    # The root copies the Gram matrix (trace +2 per step) at steps 1 and 4 only.
    assert traces == [2.0, 2.0, 2.0, 8.0, 8.0]
    assert _refreshed(0.1, block=3).init(params).gram["w"].shape == (3, 3)


def test_constraints_hold_for_static_hyperparameters_too():
    with pytest.raises(ValueError, match=r"every"):
        _refreshed(0.1, every=0)
    with pytest.raises(ValueError, match=r"block"):
        jr.rule(static=("block",), constraints={"block": ">= 1"})(
            lambda grad, *, learning_rate, block=2: grad
        )(0.1, block=0)


def test_slot_init_from_a_static_hyperparameter():
    @jr.rule(
        slots={
            "root": jr.Slot(
                shape=lambda shape, hyper: (hyper["block"], hyper["block"]),
                init=lambda param, hyper: jnp.eye(hyper["block"], dtype=param.dtype),
            )
        },
        static=("block",),
    )
    def identity_root(grad, root, *, learning_rate, block=2):
        return -learning_rate * grad * jnp.trace(root), root

    state = identity_root(0.1, block=3).init({"w": jnp.ones(4)})
    np.testing.assert_array_equal(state.root["w"], np.eye(3))


def _nesterov_needs_momentum(hyper):
    if hyper["nesterov"] and hyper["momentum"] == 0:
        raise ValueError("nesterov needs momentum > 0")


@jr.rule(
    slots={"buf": jr.Slot()},
    positional=("lr", "momentum"),
    keyword=("maximize", "foreach", "nesterov"),
    ignored={"foreach": None},
    storage_args=False,
    check=_nesterov_needs_momentum,
)
def _port(grad, buf, *, lr=1e-3, momentum=0.0, nesterov=False, maximize=False):
    """A port of a library whose factory has no storage arguments."""
    buf = momentum * buf + grad
    step = grad + momentum * buf if nesterov else buf
    return (lr if maximize else -lr) * step, buf


def test_keyword_order_storage_args_and_check():
    params = list(inspect.signature(_port).parameters)
    assert params == ["lr", "momentum", "maximize", "foreach", "nesterov"]
    tx = _port(0.5, 0.0)
    grads = {"w": jnp.ones(2, jnp.bfloat16)}
    state = tx.init(grads)
    assert state.buf["w"].dtype == jnp.bfloat16  # stored like the parameter
    np.testing.assert_allclose(tx.update(grads, state)[0]["w"], -0.5)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'buf_dtype'"):
        _port(0.5, buf_dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"nesterov needs momentum > 0"):
        _port(0.5, nesterov=True)
    _port(0.5, 0.9, nesterov=True)  # a combination the check accepts
    with pytest.raises(TypeError, match=r"keyword names \['nope'\]"):
        jr.rule(keyword=("nope",))(lambda grad, *, lr: grad)


def test_a_slot_can_default_to_its_own_storage_dtype():
    @jr.rule(slots={"ema": jr.Slot(dtype_arg="ema_dtype", dtype_default=jnp.float32)})
    def averaged(grad, ema, *, learning_rate):
        ema = 0.5 * ema + 0.5 * grad
        return -learning_rate * ema, ema

    params = {"w": jnp.ones(3, jnp.bfloat16)}
    assert inspect.signature(averaged).parameters["ema_dtype"].default is jnp.float32
    assert averaged(0.1).init(params).ema["w"].dtype == jnp.float32
    assert averaged(0.1, ema_dtype=None).init(params).ema["w"].dtype == jnp.bfloat16


# ---------------------------------------------------------------------------
# Per-tree slots: one scalar for the whole tree (step-size estimates)


def _sq_norm_stats(grad, step):
    g2 = jnp.sum(grad * grad)
    return {"g2": g2, "weighted": step * g2}  # (each key summed over leaves)


@jr.rule(
    slots={
        "total": jr.Slot(per_tree=True, init="start"),
        "biggest": jr.Slot(per_tree=True, init=lambda params: 2.0 * len(params)),
    },
    global_stats=_sq_norm_stats,
)
def _running_norm(grad, total, biggest, stats, *, learning_rate=1.0, start=0.5):
    total = total + stats["g2"]
    biggest = jnp.maximum(biggest, stats["weighted"])
    return -learning_rate * grad / jnp.sqrt(total), total, biggest


def test_per_tree_slot_is_one_scalar_updated_from_global_sums():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]], jnp.bfloat16)}
    tx = _running_norm()
    state = tx.init(params)
    # One scalar each, in the lowest-precision dtype of the parameters
    # (as optax stores such scalars); init from a number or from the tree.
    assert state.total.shape == ()
    assert state.total.dtype == jnp.bfloat16
    assert float(state.biggest) == 4.0
    grads = [
        {"a": jnp.array([1.0, 1.0]), "b": jnp.array([[2.0]], jnp.bfloat16)},
        {"a": jnp.array([0.0, 3.0]), "b": jnp.array([[0.0]], jnp.bfloat16)},
    ]
    step = jax.jit(tx.update)
    total, biggest = 0.5, 4.0
    for k, g in enumerate(grads, start=1):
        g2 = sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in g.values())
        total, biggest = total + g2, max(biggest, k * g2)
        updates, state = step(g, state, params)
        np.testing.assert_allclose(
            np.asarray(updates["a"], np.float64),
            -np.asarray(g["a"]) / np.sqrt(total),
            rtol=1e-2,  # (total is read from its bfloat16 storage)
        )
    assert float(state.total) == pytest.approx(total, rel=1e-2)
    assert float(state.biggest) == pytest.approx(biggest, rel=1e-2)
    # Its dtype argument, like a leaf slot's.
    wide = _running_norm(total_dtype=jnp.float32).init(params)
    assert wide.total.dtype == jnp.float32
    assert wide.biggest.dtype == jnp.bfloat16


def test_per_tree_slot_composes_with_optax():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    tx = optax.chain(optax.clip(1.0), _running_norm(learning_rate=0.1))
    masked = optax.masked(_running_norm(), {"a": True, "b": False})
    state, mstate = tx.init(params), masked.init(params)
    for _ in range(3):
        updates, state = jax.jit(tx.update)(params, state, params)
        _, mstate = jax.jit(masked.update)(params, mstate, params)
    # The masked rule sums over the leaves it sees only.
    seen = float(mstate.inner_state.total) - 0.5
    np.testing.assert_allclose(seen, 3 * (1.0 + 4.0), rtol=1e-6)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_per_tree_slot_computed_per_leaf_is_refused():
    @jr.rule(slots={"total": jr.Slot(per_tree=True)})
    def leaky(grad, total, *, learning_rate=1.0):
        return -learning_rate * grad, total + jnp.sum(grad)

    params = {"a": jnp.ones(2)}
    tx = leaky()
    with pytest.raises(ValueError, match=r"per-tree slot 'total'.*\['a'\]'s own"):
        tx.update(params, tx.init(params))


def test_per_tree_slot_options_are_checked():
    with pytest.raises(TypeError, match=r"slot 'total' is per_tree.*no shape="):

        @jr.rule(slots={"total": jr.Slot(per_tree=True, shape=lambda s: s)})
        def shaped(grad, total, *, learning_rate=1.0):
            return -grad, total

    @jr.rule(slots={"total": jr.Slot(per_tree=True, init=lambda p: p["a"])})
    def vector_init(grad, total, *, learning_rate=1.0):
        return -grad, total

    with pytest.raises(TypeError, match="per-tree slot 'total' must be a real scalar"):
        vector_init().init({"a": jnp.ones(2)})


def test_per_leaf_values_give_each_leaf_its_slot_shape():
    """``per_leaf_is_leaf``: a per-leaf value (None included) shapes a slot."""

    def shape(param_shape, hyper):
        return (1,) if hyper["blocks"] is None else (hyper["blocks"],)

    @jr.rule(
        slots={"acc": jr.Slot(shape=shape)},
        per_leaf={"blocks": 2},
        per_leaf_is_leaf={"blocks": lambda x: x is None or isinstance(x, int)},
    )
    def blocky(grad, acc, *, learning_rate, blocks=None):
        return -learning_rate * grad, acc + jnp.sum(grad)

    params = {"w": jnp.ones(4), "b": jnp.ones(2), "c": jnp.ones(3)}
    tx = blocky(0.1, blocks={"w": 3, "b": None, "c": 5})
    state = tx.init(params)
    assert {k: v.shape for k, v in state.acc.items()} == {
        "w": (3,),
        "b": (1,),
        "c": (5,),
    }
    _, state = tx.update(params, state)
    np.testing.assert_array_equal(state.acc["c"], [3.0] * 5)
    default = blocky(0.1).init(params)  # None stands for 2 on every leaf
    assert {v.shape for v in default.acc.values()} == {(2,)}
    with pytest.raises(TypeError, match="not per_leaf hyperparameters"):
        jr.rule(per_leaf_is_leaf={"blocks": callable})(
            lambda grad, *, learning_rate, blocks=None: grad
        )


def test_a_composite_names_its_misuse():
    def build(learning_rate, flag=False):
        """Build. Args: learning_rate, flag."""
        return jr.sgd(learning_rate)

    with pytest.raises(TypeError, match="must be a RuleFactory"):
        jr.composite(lambda: None)(build)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"static_args \['nope'\]"):
        jr.composite(jr.sgd, static_args=("nope",))(build)
    factory = jr.composite(jr.sgd, update_args=("obj_fn",), static_args=("flag",))(
        build
    )
    assert factory.definition.extra_args == ("obj_fn",)
    assert factory.definition.slots == jr.sgd.definition.slots
    assert "flag" in factory.static_args
    assert inspect.signature(factory) == inspect.signature(build)
    with pytest.raises(TypeError, match=r"build\(\): .*unexpected keyword"):
        factory(0.1, momentum=0.9)
