"""Shared test helpers: the rules under test, loaded from the package and examples."""

import functools
import importlib.util
import inspect
import pathlib
import sys
from types import ModuleType
from typing import Any

import jaxopt_rules as jr


ROOT = pathlib.Path(__file__).resolve().parents[1]
DROP_INS = [spec for spec in jr.REGISTRY if spec.is_drop_in]
"""The catalog rules that are drop-ins for an optax function (the others are
verified against their authors' code only: tests/test_authors.py)."""


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` as a module."""
    return _load_script("examples", name)


def load_benchmark(name: str) -> ModuleType:
    """Imports ``benchmarks/<name>.py`` as a module."""
    return _load_script("benchmarks", name)


def _load_script(folder: str, name: str) -> ModuleType:
    module_name = f"_{folder}_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, ROOT / folder / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def rules_under_test() -> list[tuple[str, Any, dict[str, Any], dict[str, Any]]]:
    """(name, factory, hyperparams, kit options) for every registered rule.

    The catalog, torch_compat (Muon with ``matrices_only``) and the example rules.
    """
    from jaxopt_rules import torch_compat

    example = load_example("custom_rule")
    catalog = [
        (
            s.name,
            s.factory,
            dict(s.hyperparams),
            {
                "schedule_arg": s.schedule_arg,
                "update_args": s.update_args,
                "steps": s.convergence_steps,
            },
        )
        for s in jr.REGISTRY
    ]
    torch_like = [
        (
            f"torch_compat.{s.name}",
            s.factory,
            dict(s.hyperparams),
            {"matrices_only": s.matrices_only},
        )
        for s in torch_compat.REGISTRY
    ]
    examples = [
        (
            "example.scaled_sgd",
            example.scaled_sgd,
            example.SCALED_SGD_TEST_HYPERPARAMS,
            {},
        ),
        (
            "example.scaled_momentum",
            example.scaled_momentum,
            example.SCALED_MOMENTUM_TEST_HYPERPARAMS,
            {},
        ),
    ]
    return catalog + torch_like + examples


QUANTIZED_KIT_OPTIONS = {"min_size": 0, "block_size": 4}
"""quantized_state options for the kit: every leaf of its small problems
quantized (none has 4096 elements), in several blocks."""


def quantized(factory: Any, bits: int) -> Any:
    """``factory`` whose transforms are wrapped in ``jr.quantized_state``.

    The wrapper keeps the factory's signature and ``static_args`` so that the
    kit finds the learning rate and ``optax.inject_hyperparams`` works.
    """

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        return jr.quantized_state(
            factory(*args, **kwargs), bits=bits, **QUANTIZED_KIT_OPTIONS
        )

    make.__signature__ = inspect.signature(factory)  # type: ignore[attr-defined]
    make.static_args = tuple(getattr(factory, "static_args", ()))  # type: ignore[attr-defined]
    return make


def quantized_rules_under_test(
    bits: int,
) -> list[tuple[str, Any, dict[str, Any], dict[str, Any]]]:
    """:func:`rules_under_test`, every factory wrapped in ``quantized_state``."""
    return [
        (f"{name}+quantized{bits}", quantized(factory, bits), hyperparams, options)
        for name, factory, hyperparams, options in rules_under_test()
    ]


def build(factory: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, taking plain gradients whatever the rule.

    A rule whose ``update`` takes per-example gradients (``jr.dpsgd``) is fed
    the kit's batch of examples of each gradient (``testing.as_per_example``),
    so the registry-wide tests run it like any other rule.
    """
    from jaxopt_rules import testing

    return testing.fed_plain_gradients(factory(*args, **kwargs), factory)


def build_reference(spec: Any, /, **kwargs: Any) -> Any:
    """``spec``'s reference with ``kwargs``, fed as :func:`build` feeds the rule."""
    from jaxopt_rules import testing

    if spec.reference_factory is None:
        raise ValueError(f"{spec.name} has no optax reference")
    return testing.fed_plain_gradients(spec.reference_factory(**kwargs), spec.factory)


def step_through_ill_conditioned_gradients(tx: Any, steps: int = 12) -> None:
    """Steps ``tx`` on gradients that break naive matrix preconditioners.

    Four leaves: a matrix whose rows are 30 orders of magnitude apart (its
    factors' condition numbers are beyond float32's range of ratios), a
    rank-one matrix whose scale changes by 100x, an all-zero matrix and a
    vector. Asserts every float in the updates, state and parameters stays
    finite at every step, and that the leaf with no gradient never moves.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    params = {
        "scaled": jnp.zeros((5, 4)),
        "rank_one": jnp.zeros((6, 6)),
        "zero": jnp.zeros((3, 3)),
        "vec": jnp.zeros(5),
    }
    update = jax.jit(tx.update)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    for k in range(steps):
        u = rng.normal(size=6)
        grads = {
            "scaled": jnp.asarray(
                rng.normal(size=(5, 4)) * np.logspace(-15, 15, 5)[:, None],
                jnp.float32,
            ),
            "rank_one": jnp.asarray(np.outer(u, u) * 10.0 ** (k % 3), jnp.float32),
            "zero": jnp.zeros((3, 3)),
            "vec": jnp.asarray(rng.normal(size=5), jnp.float32),
        }
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves((updates, state, params)):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                assert np.all(np.isfinite(leaf)), k
    assert np.all(np.asarray(params["zero"]) == 0.0)  # no gradient, no step


def check_layers_owned(tx: Any, slots: tuple[str, ...], steps: int = 3) -> None:
    """A scanned ``(16, 32, 24)`` leaf on 8 devices: each device does its layers.

    The leaf is sharded over its layers' rows (``P(None, 'x', None)``, as
    FSDP shards it) on an explicit 8-device mesh. Asserts that ``steps``
    jitted steps give the numbers of one device, that each per-layer slot
    in ``slots`` (shape ``(16, ...)``) is stored by the layers' owners after
    init and after the steps (``P('x', None)``: two layers' state per
    device), that the parameter keeps its layout, and that the compiled step
    moves the layers with all-to-alls and gathers no layer.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    rng = np.random.default_rng(0)
    host = {"w": rng.normal(size=(16, 32, 24)).astype(np.float32)}
    grads = [
        {"w": rng.normal(size=(16, 32, 24)).astype(np.float32)} for _ in range(steps)
    ]
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))

    def run(put: Any) -> tuple[Any, Any, Any, Any]:
        params = put(host)
        state = jax.jit(tx.init)(params)
        initial = state
        step = jax.jit(tx.update)
        for g in grads:
            updates, state = step(put(g), state, params)
            params = optax.apply_updates(params, updates)
        return params, initial, state, step

    single, *_ = run(lambda t: jax.tree.map(jnp.asarray, t))
    with jax.set_mesh(mesh):
        sharding = NamedSharding(mesh, PartitionSpec(None, "x", None))
        sharded, initial, state, step = run(lambda t: jax.device_put(t, sharding))
        laid_out = jax.device_put(host, sharding)
        hlo = step.lower(laid_out, state, sharded).compile().as_text()
    for slot in slots:
        for when, s in (("init", initial), ("update", state)):
            leaf = getattr(s, slot)["w"]
            assert leaf.shape[0] == 16, (slot, leaf.shape)
            assert leaf.sharding.spec[0] == "x", (slot, when, leaf.sharding)
            shard = leaf.addressable_shards[0].data
            assert shard.size * 8 == leaf.size, (slot, when, shard.shape)
    assert sharded["w"].sharding.spec == PartitionSpec(None, "x", None)
    assert "all-to-all" in hlo
    assert "all-gather" not in hlo
    np.testing.assert_allclose(sharded["w"], single["w"], rtol=1e-5, atol=1e-6)
