"""Muon against unmodified optax.contrib.muon where the registry cannot reach.

The registry's cases run on the kit's example tree, whose vectors and scalar
rule out one ``MuonDimensionNumbers`` for every leaf (optax applies it to all
leaves, and Muon's need two axes). Here a tree of matrices and 3-d stacks runs
with one of them and with a function returning a tree, against optax itself;
and what the drop-in refuses is refused by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from optax.contrib import MuonDimensionNumbers

import jaxopt_rules as jr
from jaxopt_rules import testing


def _params(dtype):
    rng = np.random.default_rng(1)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    return {"w": leaf(4, 6), "heads": leaf(3, 4, 5), "v": leaf(5, 2)}


def _run(tx, params, steps=30):
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(steps):
        grads = jax.tree.map(lambda p: jnp.sin(2 * p) + 0.05 * p, params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


DIMS = [
    MuonDimensionNumbers(reduction_axis=-2, output_axis=-1),
    lambda params: {
        "w": MuonDimensionNumbers(),
        "heads": MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2),
        "v": None,
    },
]


@pytest.mark.parametrize("dims", DIMS, ids=["one", "fn"])
@pytest.mark.parametrize("preconditioning", ["frobenius", "aol"])
def test_dimension_numbers_follow_optax(dims, preconditioning):
    kwargs = {
        "learning_rate": 1e-2,
        "muon_weight_dimension_numbers": dims,
        "preconditioning": preconditioning,
    }
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        ours = _run(jr.muon(**kwargs), params)
        theirs = _run(optax.contrib.muon(**kwargs), params)
        assert testing.relative_error(ours, theirs) <= 1e-12


def test_what_the_drop_in_refuses_is_named():
    with pytest.raises(ValueError, match="preconditioning must be one of"):
        jr.muon(0.1, preconditioning="newton")
    with pytest.raises(ValueError, match="unknown ns_coeffs preset 'polar'"):
        jr.muon(0.1, ns_coeffs="polar")
    with pytest.raises(ValueError, match="ns_coeffs must have shape"):
        jr.muon(0.1, ns_coeffs=(1.0, 2.0))
    with pytest.raises(ValueError, match="more than ns_steps=3"):
        jr.muon(0.1, ns_coeffs="dion", ns_steps=3)
    with pytest.raises(TypeError, match="got 'rows'"):
        jr.muon(0.1, muon_weight_dimension_numbers={"w": "rows"})
    z = {"z": jnp.ones((3, 4), jnp.complex64)}
    tx = jr.muon(0.1, preconditioning="schatten")
    with pytest.raises(TypeError, match="not defined for complex"):
        tx.update(z, tx.init(z), z)
    vec = {"b": jnp.ones(3)}
    tx = jr.muon(0.1, muon_weight_dimension_numbers=MuonDimensionNumbers())
    with pytest.raises(ValueError, match="must have two or more axes"):
        tx.init(vec)


@pytest.mark.parametrize(
    ("spec", "owners"),
    [
        # Sharded over the matrices' rows (FSDP): moved onto the stack axis.
        (PartitionSpec(None, "x", None), PartitionSpec("x", None, None)),
        # Already whole matrices per device: unchanged.
        (PartitionSpec("x", None, None), PartitionSpec("x", None, None)),
    ],
)
def test_a_stacks_matrices_are_iterated_whole_on_their_owners(spec, owners):
    """Under explicit sharding each device runs Newton-Schulz on its own matrices.

    A (16, 32, 24) stack on 8 devices: the program moves the row sharding to
    the stack axis (two whole matrices per device) with all-to-alls, gathers
    nothing, and gives the numbers of one device.
    """
    from jaxopt_rules._core import whole_matrices

    dims = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    tx = jr.muon(1e-2, muon_weight_dimension_numbers={"w": dims})
    rng = np.random.default_rng(0)
    host = {"w": rng.normal(size=(16, 32, 24)).astype(np.float32)}
    grads = [{"w": rng.normal(size=(16, 32, 24)).astype(np.float32)} for _ in range(3)]
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))

    def run(put):
        params = put(host)
        state = tx.init(params)
        step = jax.jit(tx.update)
        for g in grads:
            updates, state = step(put(g), state, params)
            params = optax.apply_updates(params, updates)
        return params, step

    single, _ = run(lambda t: jax.tree.map(jnp.asarray, t))
    with jax.set_mesh(mesh):
        sharding = NamedSharding(mesh, spec)
        x = jax.device_put(jnp.zeros((16, 32, 24)), sharding)
        assert jax.typeof(whole_matrices(x, (0,))).sharding.spec == owners
        sharded, step = run(lambda t: jax.device_put(t, sharding))
        state = tx.init(sharded)
        hlo = step.lower(host, state, sharded).compile().as_text()
    assert "all-gather" not in hlo
    if spec != owners:
        assert "all-to-all" in hlo
    assert jax.typeof(sharded["w"]).sharding.spec == spec
    np.testing.assert_allclose(sharded["w"], single["w"], rtol=1e-5, atol=1e-6)
