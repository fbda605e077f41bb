"""Property tests: the core and the wrappers over random trees, shapes and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import build
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import jaxopt_rules as jr
from jaxopt_rules.testing import with_update_args


# The dtypes random leaves are drawn from: the one place to extend; _values
# fills a leaf of any dtype. Integer leaves must be left untouched, complex ones
# run in the rules that support them (_for_rule makes them real for the others).
LEAF_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64, jnp.int32)

_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
_zero_size = st.sampled_from([(0,), (3, 0)])
# A leaf spec: (kind, shape, dtype); about one leaf in five is zero-size and
# one in five a hole (None).
_leaf = st.sampled_from(["array", "array", "array", "zero-size", "none"]).flatmap(
    lambda kind: st.tuples(
        st.just(kind),
        _zero_size if kind == "zero-size" else _shapes,
        st.sampled_from(LEAF_DTYPES),
    )
)
_trees = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("abcde"), children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


def _values(shape, dtype, rng):
    """A leaf of ``dtype``: normal values, rounded for integer dtypes."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape), dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(rng.normal(size=shape), dtype)
    return jnp.asarray(np.round(3 * rng.normal(size=shape)), dtype)


def _supports_complex(factory):
    inner = getattr(factory, "rules", (factory,))[0]
    return inner.definition.complex_params


def _for_rule(params, rule):
    """``params``, with complex leaves made real when ``rule`` refuses complex."""
    if _supports_complex(rule.factory):
        return params
    return jax.tree.map(lambda p: jnp.real(p) if jnp.iscomplexobj(p) else p, params)


def _build(spec, rng, dtype=None):
    """The tree ``spec`` describes; ``dtype``, if given, for every leaf."""
    if isinstance(spec, tuple):
        kind, shape, leaf_dtype = spec
        if kind == "none":
            return None
        return _values(shape, leaf_dtype if dtype is None else dtype, rng)
    if isinstance(spec, list):
        return [_build(s, rng, dtype) for s in spec]
    return {k: _build(v, rng, dtype) for k, v in spec.items()}


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
    params = _build(spec, rng, dtype)
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
    params = _build(spec, np.random.default_rng(1), jnp.float32)
    grads = jax.tree.map(jnp.cos, params)
    b1, b2 = np.float32(b1), np.float32(b2)
    ours, ref = jr.adam(0.1, b1=b1, b2=b2), optax.adam(0.1, b1=b1, b2=b2)
    u1, _ = jax.jit(ours.update)(grads, ours.init(params))
    u2, _ = jax.jit(ref.update)(grads, ref.init(params))
    for a, e in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


# --- Wrapper stacks give the bare rule's updates ----------------------------------


# flat_leaves gives per-leaf numbers only for rules that treat elements
# independently of the rest of their leaf (trust ratios and norms do not), and
# draw no random numbers (one key per leaf: a flat buffer draws other numbers,
# as its docstring says; noisy_sgd, dpsgd). dpsgd's per-example gradients have
# no meaning in a flat buffer either (the batch axis is flattened away).
def _draws_random_numbers(spec: jr.RuleSpec) -> bool:
    definition = getattr(spec.factory, "definition", None)
    return definition is not None and definition.takes_key


_ELEMENTWISE = {
    s.name
    for s in jr.REGISTRY
    if not s.reads_whole_leaves and not _draws_random_numbers(s)
}


def _gradients(params, k):
    """Step ``k``'s gradients: a smooth function of the params, zero if integer."""

    def one(p):
        if not jnp.issubdtype(p.dtype, jnp.inexact):
            return jnp.zeros_like(p)
        return jnp.cos(p.astype(jnp.result_type(p.dtype, jnp.float32)) * (k + 1))

    return jax.tree.map(lambda p: one(p).astype(p.dtype), params)


def _updates(tx, params, steps=2):
    """The updates of ``steps`` jitted steps from ``params``."""
    state = tx.init(params)
    step = jax.jit(tx.update)
    history = []
    for k in range(steps):
        updates, state = step(_gradients(params, k), state, params)
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history


def _host(x):
    """``x`` on the host; 16-bit floats as float32 (exactly)."""
    x = np.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4:
        return x.astype(np.float32)
    return x


def _assert_same(actual, expected, what, ulps=0):
    """Same structure and dtypes; values equal, or within ``ulps`` of each dtype."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for step, (a_tree, e_tree) in enumerate(zip(actual, expected, strict=True)):
        for a, e in zip(jax.tree.leaves(a_tree), jax.tree.leaves(e_tree), strict=True):
            assert a.dtype == e.dtype, what
            assert a.shape == e.shape, what
            if ulps and jnp.issubdtype(e.dtype, jnp.inexact):
                eps = float(jnp.finfo(e.dtype).eps)
                np.testing.assert_allclose(
                    _host(a),
                    _host(e),
                    rtol=ulps * eps,
                    atol=0,
                    err_msg=f"{what} step {step}",
                )
            else:
                np.testing.assert_array_equal(
                    _host(a), _host(e), err_msg=f"{what} step {step}"
                )


# The wrapper stacks compile several programs per example: no shrinking (the
# trees are small already, and a failure is reported as found, in seconds).
_STACKS = settings(
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)


def _ulps(rule):
    """Exact, but 4 ulps for rules that reduce over leaves (LARS's norms).

    log_step adds its own norms of the same leaves to the program; XLA then
    shares or fuses the rule's reductions differently, and a norm may round
    to its neighbour (1 ulp), which reaches the update through a quotient of
    two norms and the products after it (seen: 2 ulps, LARS at 8 bits).
    Elementwise arithmetic is not reordered: those rules match bit for bit.
    """
    return 4 if rule.reads_whole_leaves else 0


def _logged(tx, records):
    return jr.log_step(tx, every=1, sinks=[records.append])


@settings(_STACKS, max_examples=10)
@given(spec=_trees, rule=st.sampled_from(jr.REGISTRY))
def test_wrapper_stacks_give_the_bare_rules_updates(spec, rule):
    params = _for_rule(_build(spec, np.random.default_rng(2)), rule)
    make = lambda: with_update_args(
        build(rule.factory, **rule.hyperparams), rule.update_args
    )
    expected = _updates(make(), params)
    # The quantized_state default min_size (4096) leaves these small leaves in
    # full precision, so the stacks must give exactly the bare rule's numbers.
    records = []
    ulps = _ulps(rule)
    with _logged(jr.quantized_state(make()), records) as outer:
        _assert_same(
            _updates(outer, params), expected, "log_step(quantized_state)", ulps
        )
        outer.flush()
    assert [r["step"] for r in records] == [0, 1]
    records = []
    with _logged(make(), records) as logged:
        inner = jr.quantized_state(logged)
        _assert_same(
            _updates(inner, params), expected, "quantized_state(log_step)", ulps
        )
        logged.flush()
    assert [r["step"] for r in records] == [0, 1]
    if rule.name in _ELEMENTWISE:
        # The same arithmetic in another layout: XLA compiles the two programs
        # differently (a scalar leaf becomes an element of a vector, fused and
        # contracted into FMAs otherwise), 1 ulp per step where the chain is
        # short; seen: 2, NAdam's second step on a float32 scalar leaf
        # (-0.05774073 against -0.057740737; nadamw 1 ulp, adam and radam
        # equal). A sum over the whole tree (Polyak's |g|**2, a global norm)
        # is taken over one flat buffer instead of leaf by leaf: the same
        # terms added in another order, a few ulps (seen: 3, polyak_sgd),
        # which reach every element through the step size.
        tree_sums = getattr(rule.factory.definition, "global_stats", None)
        _assert_same(
            _updates(jr.flat_leaves(make()), params),
            expected,
            "flat_leaves",
            ulps=2 if tree_sums is None else 4,
        )


@settings(_STACKS, max_examples=6)
@given(spec=_trees, rule=st.sampled_from(jr.REGISTRY), bits=st.sampled_from([8, 4]))
def test_log_step_around_or_inside_quantized_state_changes_nothing(spec, rule, bits):
    """Every non-empty leaf quantized (min_size=0): the reference is quantized too.

    Deterministic rounding, so that both stacks round the same values alike.
    """
    params = _for_rule(_build(spec, np.random.default_rng(3)), rule)
    make = lambda: with_update_args(
        build(rule.factory, **rule.hyperparams), rule.update_args
    )
    quantize = lambda tx: jr.quantized_state(
        tx, bits=bits, min_size=0, stochastic_rounding=False
    )
    expected = _updates(quantize(make()), params)
    ulps = _ulps(rule)
    records = []
    with _logged(quantize(make()), records) as outer:
        _assert_same(
            _updates(outer, params), expected, "log_step(quantized_state)", ulps
        )
    with _logged(make(), records) as logged:
        _assert_same(
            _updates(quantize(logged), params),
            expected,
            "quantized_state(log_step)",
            ulps,
        )
