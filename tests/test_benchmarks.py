"""The benchmark scripts keep working: tiny runs, no timing asserted."""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_benchmark

import jaxopt_rules as jr


step = load_benchmark("step")
convergence = load_benchmark("convergence")


@pytest.mark.parametrize(("kind", "leaves"), [("1", 1), ("200", 196), ("2000", 2000)])
def test_trees_have_the_documented_sizes(kind, leaves):
    shapes = step.tree_shapes(kind, 10_000_000)
    total = sum(math.prod(s) for s in shapes)
    assert len(shapes) == leaves
    assert abs(total - 10_000_000) / 10_000_000 < 0.02


def test_nominal_bytes_of_float32_adam_is_28():
    state = jr.adam(1e-3).init({"w": jnp.zeros(1000)})
    assert step.nominal_bytes(jr.tree_bytes(state) / 1000) == pytest.approx(
        28, abs=0.01
    )


def test_step_benchmark_runs_on_a_tiny_tree():
    args = argparse.Namespace(
        rounds=2, round_seconds=0.0, no_torch=True, no_bf16=False, flat=True
    )
    specs = [s for s in jr.REGISTRY if s.name in ("adam", "lion")]
    rows = step.bench_tree("200", 20_000, specs, args)
    labels = {(r.rule, r.label) for r in rows}
    assert ("adam", "optax") in labels
    assert ("adam", "jaxopt_rules bf16 state") in labels
    assert ("adam", "jaxopt_rules flat") in labels
    assert ("(paired)", "lion / adam (jaxopt_rules)") in labels
    ours = next(r for r in rows if (r.rule, r.label) == ("adam", "jaxopt_rules"))
    assert ours.state_bytes == pytest.approx(8.0, abs=0.01)
    assert ours.ms > 0
    assert ours.x_optax is not None
    assert ours.x_optax > 0
    step.print_table(rows, markdown=True)


def test_stdlib_text_is_available():
    text = convergence.stdlib_text()
    assert len(text) > 100_000
    assert b"def " in text


@pytest.mark.parametrize("task_name", ["quadratic", "rosenbrock", "digits"])
def test_convergence_tasks_train(task_name):
    task = convergence.TASKS[task_name]()
    result = convergence.train(
        task, convergence.make_optimizer("adam", task_name), "adam", steps=50
    )
    assert result.steps[-1] == 50
    assert np.isfinite(result.losses).all()
    assert result.final < result.losses[0]


def test_charlm_model_learns_a_little():
    task = convergence.charlm_task()
    params = task.init(jax.random.key(0))
    first = float(task.loss(params, task.batch(0)))
    assert first == pytest.approx(math.log(256), rel=0.05)  # uniform at init
    result = convergence.train(
        task, convergence.make_optimizer("adam", "charlm"), "adam", steps=30
    )
    assert result.final < first - 0.5


def test_quantized_state_benchmark_runs(capsys):
    quantized = load_benchmark("quantized_state")
    quantized.memory_table()
    quantized.speed_table(20_000, ["1"], rounds=1)
    out = capsys.readouterr().out
    assert "State bytes per parameter" in out
    assert (
        "| transformer 10.1M x196 | 10,132,992 | adam | 8.000 | 4.000 | 2.055 |" in out
    )
    assert "Step time" in out
    bf16 = quantized.with_format(quantized.rule_maker("lion", "digits"), "bfloat16")
    state = bf16.init({"w": jnp.zeros(8)})
    assert state.mu["w"].dtype == jnp.bfloat16
    assert hasattr(state, "rounding_key")
