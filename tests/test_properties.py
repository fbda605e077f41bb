"""Property tests: the core over random tree structures, shapes and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import HealthCheck, given, settings, strategies as st

import jaxopt_rules as jr


_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
_leaf = st.one_of(
    _shapes.map(lambda s: ("array", s)),
    st.just(("none", None)),
)
_trees = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("abcde"), children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


def _build(spec, dtype, rng):
    if isinstance(spec, tuple):
        kind, shape = spec
        if kind == "none":
            return None
        return jnp.asarray(rng.normal(size=shape), dtype)
    if isinstance(spec, list):
        return [_build(s, dtype, rng) for s in spec]
    return {k: _build(v, dtype, rng) for k, v in spec.items()}


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples in every CI run
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    spec=_trees,
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
    momentum=st.one_of(st.none(), st.floats(0.0, 0.99)),
    nesterov=st.booleans(),
    lr=st.floats(1e-4, 1.0),
)
def test_sgd_matches_its_formula_on_any_tree(spec, dtype, momentum, nesterov, lr):
    rng = np.random.default_rng(0)
    params = _build(spec, dtype, rng)
    grads = jax.tree.map(lambda p: (p * 0.5 + 0.1).astype(p.dtype), params)
    tx = jr.sgd(lr, momentum=momentum, nesterov=nesterov)
    state = tx.init(params)
    for _ in range(2):
        updates, state = jax.jit(tx.update)(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(grads)
    assert jax.tree.structure(jax.tree.map(jnp.shape, updates)) == jax.tree.structure(
        jax.tree.map(jnp.shape, grads)
    )

    def expected(g):
        g = np.asarray(g, np.float32)
        lr32 = np.float32(lr)
        if momentum is None:
            return -lr32 * g
        m = np.float32(momentum)
        trace = g + m * g  # two steps with the same gradient, trace_0 = 0
        return -lr32 * (g + m * trace if nesterov else trace)

    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        assert u.dtype == g.dtype
        tol = 1e-6 if dtype == jnp.float32 else 1e-2
        np.testing.assert_allclose(
            np.asarray(u, np.float32), expected(g), rtol=tol, atol=1e-7
        )


@settings(max_examples=15, deadline=None, derandomize=True)
@given(spec=_trees, b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.999))
def test_adam_matches_optax_on_any_tree(spec, b1, b2):
    params = _build(spec, jnp.float32, np.random.default_rng(1))
    grads = jax.tree.map(jnp.cos, params)
    b1, b2 = np.float32(b1), np.float32(b2)
    ours, ref = jr.adam(0.1, b1=b1, b2=b2), optax.adam(0.1, b1=b1, b2=b2)
    u1, _ = jax.jit(ours.update)(grads, ours.init(params))
    u2, _ = jax.jit(ref.update)(grads, ref.init(params))
    for a, e in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
