"""The benchmark scripts keep working: tiny runs, no timing asserted.

Also the shared harness (``benchmarks/_timing.py``, ``benchmarks/_table.py``)
that every script comparing candidates times with, and the way the scripts are
run (``python -m benchmarks.<name>`` or ``python benchmarks/<name>.py``).
"""

import argparse
import ast
import math
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ROOT, load_benchmark

import jaxopt_rules as jr
from benchmarks import _table, _timing


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
    # polyak_sgd reads the loss value; adafactor has factored state.
    names = ("adam", "lion", "polyak_sgd", "adafactor")
    specs = [s for s in jr.REGISTRY if s.name in names]
    rows = step.bench_tree("20", 20_000, specs, args)
    labels = {(r.rule, r.label) for r in rows}
    assert ("adam", "optax") in labels
    assert ("adam", "jaxopt_rules bf16 state") in labels
    assert ("adam", "jaxopt_rules flat") in labels
    assert ("(paired)", "lion / adam (jaxopt_rules)") in labels
    assert ("polyak_sgd", "optax") in labels
    assert ("adafactor", "jaxopt_rules") in labels
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


@pytest.mark.parametrize("task_name", ["quadratic", "rosenbrock", "digits", "conv"])
def test_convergence_tasks_train(task_name):
    task = convergence.TASKS[task_name]()
    result = convergence.train(
        task, convergence.make_optimizer("adam", task_name), "adam", steps=50
    )
    assert result.steps[-1] == 50
    assert np.isfinite(result.losses).all()
    assert result.final < result.losses[0]


def test_every_rule_has_a_convergence_setting_for_every_task():
    for task_name in convergence.TASKS:
        for spec in jr.REGISTRY:
            tx = convergence.make_optimizer(spec.name, task_name)
            assert isinstance(tx, optax.GradientTransformation)


def test_a_rule_that_reads_the_loss_trains():
    task = convergence.TASKS["quadratic"]()
    result = convergence.train(
        task,
        convergence.make_optimizer("polyak_sgd", "quadratic"),
        "polyak_sgd",
        steps=50,
        update_args=convergence.update_args("polyak_sgd"),
    )
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


# -- the shared harness ---------------------------------------------------------


def _recording(label: str, log: list[str], steps: int) -> _timing.Timed:
    return _timing.Timed(label, lambda: log.append(label), lambda: None, steps=steps)


def test_measure_runs_every_candidate_once_per_round_in_fresh_orders():
    log: list[str] = []
    candidates = [_recording(label, log, steps=2) for label in "abc"]
    _timing.measure(candidates, rounds=3, pause=0.0, warmup_rounds=1)
    assert len(log) == 3 * 2 * 4  # candidates x steps x (warm-up + rounds)
    rounds = [log[i : i + 6] for i in range(0, len(log), 6)]
    for turns in rounds:
        assert sorted(turns) == ["a", "a", "b", "b", "c", "c"]
        assert all(turns[i] == turns[i + 1] for i in range(0, 6, 2))
    assert len({tuple(turns[::2]) for turns in rounds}) > 1
    assert [len(c.times) for c in candidates] == [3, 3, 3]  # warm-up not kept
    assert all(t >= 0 for c in candidates for t in c.times)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    a = _timing.Timed("a", lambda: None, lambda: None, times=[2.0, 3.0, 10.0])
    b = _timing.Timed("b", lambda: None, lambda: None, times=[1.0, 3.0, 2.0])
    # per-round ratios 2, 1, 5 -> 2 (the ratio of the medians would be 1.5)
    assert _timing.paired_ratio(a, b) == 2.0
    assert _timing.median_ms(a) == 3.0
    assert _timing.paired_ratio(a, None) is None
    assert _timing.paired_ratio(a, _timing.Timed("c", a.run, a.sync)) is None


def test_calibrate_picks_the_steps_per_round():
    timed = _timing.Timed("sleep", lambda: time.sleep(0.01), lambda: None)
    _timing.calibrate(timed, target_s=0.05)
    assert 2 <= timed.steps <= 5


def test_donated_loop_feeds_each_step_the_last_result():
    run, sync, box = _timing.donated_loop(
        lambda p, s, g: (p + g, s + 1), jnp.zeros(2), 0, jnp.ones(2)
    )
    for _ in range(3):
        run()
    sync()
    np.testing.assert_array_equal(box[0], [3.0, 3.0])
    assert box[1] == 3


def test_tables_print_markdown_and_aligned_text(capsys):
    assert _table.markdown_header(["rule", "ms"], "lr") == "| rule | ms |\n|---|---:|"
    _table.print_table(["rule", "ms"], [["adam", "1.25"], ["lion", "10.5"]], "lr")
    _table.print_table(
        ["rule", "ms"], [["adam", "1.25"], ["lion", "10.5"]], "lr", markdown=False
    )
    assert capsys.readouterr().out == (
        "| rule | ms |\n|---|---:|\n| adam | 1.25 |\n| lion | 10.5 |\n"
        "rule    ms\nadam  1.25\nlion  10.5\n"
    )
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        _table.markdown_header(["rule", "ms"], "l")


# -- how the scripts are written and run ------------------------------------------

SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py"))
TIMING_SCRIPTS = [
    "leaf_batching",
    "logging_overhead",
    "matrix_scaling",
    "quantized_state",
    "step",
]


def _tree(name: str) -> ast.Module:
    return ast.parse((ROOT / "benchmarks" / f"{name}.py").read_text())


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_script_edits_the_import_path(name):
    uses = [
        node.lineno
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not uses, f"benchmarks/{name}.py uses sys.path at lines {uses}"


@pytest.mark.parametrize("name", TIMING_SCRIPTS)
def test_timing_scripts_use_the_shared_harness(name):
    imported, attributes = set(), set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attributes.add(f"{node.value.id}.{node.attr}")
    assert any(m.startswith("benchmarks._timing.") for m in imported), imported
    # the rounds, the garbage-collector pause and the medians live in _timing
    assert "statistics" not in imported
    assert "gc.disable" not in attributes


@pytest.mark.parametrize("name", [s for s in SCRIPTS if not s.startswith("_")])
def test_every_script_imports(name):
    module = load_benchmark(name)
    assert callable(module.main)


def test_torch_agreement_reads_the_verification_problem():
    problem = load_benchmark("torch_agreement").load_torch_problem()
    assert problem.relative_error({"w": np.ones(2)}, {"w": np.ones(2)}) == 0


def test_matrix_scaling_runs_one_process_per_device():
    """Each device its own process: the matrix rules' state per device halves.

    On 2 processes (one CPU device each, jax.distributed on localhost) the
    scanned stacks and Shampoo's blocks keep half of their 1-process state
    per device; the separate leaves keep their factors whole on each.
    """
    sizes = ["--stack", "4", "--size", "64", "--blocks", "4", "--block", "32"]
    script = [sys.executable, "-m", "benchmarks.matrix_scaling", "--processes"]
    result = subprocess.run(
        [*script, "--counts", "1", "2", "--rounds", "1", *sizes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = {}
    for line in result.stdout.splitlines():
        cells = line.rsplit(maxsplit=3)
        if len(cells) == 4 and cells[1] in ("1", "2"):
            table[cells[0], int(cells[1])] = float(cells[2])
    layouts = {name for name, _ in table}
    assert layouts == {
        "muon stack",
        "muon separate",
        "shampoo",
        "soap stack",
        "soap separate",
        "psgd_kron stack",
        "psgd_kron separate",
    }
    for name in ("soap stack", "psgd_kron stack", "shampoo"):
        assert table[name, 2] == pytest.approx(table[name, 1] / 2, rel=0.1), name
    for name in ("soap separate", "psgd_kron separate"):
        assert table[name, 2] > 0.6 * table[name, 1], name


@pytest.mark.parametrize(
    "command",
    [["benchmarks/leaf_batching.py"], ["-m", "benchmarks.leaf_batching"]],
    ids=["path", "module"],
)
def test_a_script_runs_from_the_repo_root(command):
    args = ["--leaves", "2", "--params", "64", "--rounds", "1", "--steps", "1"]
    result = subprocess.run(
        [sys.executable, *command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| 2 | per-leaf |" in result.stdout


def test_leaderboard_sweeps_then_reruns_the_best_rate_with_seeds(capsys):
    leaderboard = load_benchmark("leaderboard")
    args = ["--quick", "--rules", "adamw", "sgd", "--steps", "50", "--no-plots"]
    entries = {e.rule: e for e in leaderboard.main(args)}
    assert "adamw" in capsys.readouterr().out
    for entry in entries.values():
        # Five rates, and two more past an end of the grid that holds the best.
        assert len(entry.rates) == len(entry.sweep_final)
        assert len(entry.rates) in range(5, 5 + 2 * leaderboard.EXTENSIONS + 1, 2)
        assert entry.rates == sorted(entry.rates)
        finite = [f if math.isfinite(f) else math.inf for f in entry.sweep_final]
        assert entry.best_rate == entry.rates[int(np.argmin(finite))]
        assert entry.curves.shape == (len(leaderboard.SEEDS), len(entry.eval_steps))
        # Every seed learns, from different starts.
        assert (entry.curves[:, -1] < entry.curves[:, 0]).all()
        assert len(set(entry.curves[:, 0].tolist())) == len(leaderboard.SEEDS)
    # SGD has no weight decay: seed 0 at the best rate is the sweep's run at
    # that rate (both seed 0).
    sgd = entries["sgd"]
    assert sgd.best_weight_decay is None
    assert sgd.weight_decays == []
    index = sgd.rates.index(sgd.best_rate)
    assert sgd.curves[0, -1] == pytest.approx(sgd.sweep_final[index], rel=1e-5)
    # AdamW's weight decays at the best rate: its own (the rate sweep's run),
    # then 0 and 0.1; seed 0 of the best is that decay's run.
    adamw = entries["adamw"]
    assert adamw.weight_decays == [1e-4, 0.0, 0.1]
    index = adamw.rates.index(adamw.best_rate)
    assert adamw.weight_decay_final[0] == adamw.sweep_final[index]
    at = int(np.argmin(adamw.weight_decay_final))
    assert adamw.best_weight_decay == adamw.weight_decays[at]
    assert adamw.curves[0, -1] == pytest.approx(adamw.weight_decay_final[at], rel=1e-5)
    assert len(set(adamw.weight_decay_final)) == 3  # the decay changes the run
    assert adamw.state_bytes_per_param == pytest.approx(8.0, rel=1e-3)  # m and v


def test_leaderboard_in_worker_processes_gives_the_same_entries(capsys):
    leaderboard = load_benchmark("leaderboard")
    args = ["--quick", "--rules", "adamw", "lion", "--steps", "50", "--no-plots"]
    alone = {e.rule: e for e in leaderboard.main(args)}
    shared = {e.rule: e for e in leaderboard.main([*args, "--jobs", "2"])}
    assert "2 process(es)" in capsys.readouterr().out
    assert shared.keys() == alone.keys() == {"adamw", "lion"}
    for rule, entry in shared.items():
        assert entry.rates == alone[rule].rates
        assert entry.best_rate == alone[rule].best_rate
        assert entry.best_weight_decay == alone[rule].best_weight_decay
        # One thread per process sums in another order than two threads.
        np.testing.assert_allclose(entry.curves, alone[rule].curves, rtol=1e-4)
