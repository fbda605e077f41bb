"""Step-record delivery: order, failing sinks, flush/close, file formats."""

import csv
import json
import logging
import sys
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, load_example

import jaxopt_rules as jr
from jaxopt_rules.logging import Dispatcher


def test_records_arrive_in_order_through_a_slow_sink():
    seen = []

    def slow(record):
        time.sleep(0.001)
        seen.append(record["step"])

    with Dispatcher([slow]) as dispatcher:
        for step in range(50):
            dispatcher.submit({"step": step})
        dispatcher.flush()  # waits for the slow sink
        assert seen == list(range(50))


def test_delivery_is_off_the_submitting_thread():
    threads = []
    with Dispatcher([lambda r: threads.append(threading.current_thread())]) as d:
        d.submit({"step": 0})
    assert threads == [d._thread]
    assert threads[0] is not threading.current_thread()


def test_a_failing_sink_is_logged_once_then_counted_and_the_others_deliver(caplog):
    seen = []

    def broken(record):
        raise RuntimeError("disk full")

    with caplog.at_level(logging.ERROR, logger="jaxopt_rules"):
        with Dispatcher([broken, seen.append]) as dispatcher:
            for step in range(5):
                dispatcher.submit({"step": step})
            dispatcher.flush()
            assert dispatcher.failures == {
                "test_a_failing_sink_is_logged_once_then_counted_and_the_others_"
                "deliver.<locals>.broken": 5
            }
    assert [r["step"] for r in seen] == [0, 1, 2, 3, 4]
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1  # one traceback, not one per record
    assert "disk full" in caplog.text
    summaries = [r for r in caplog.records if "failed 5 time(s)" in r.getMessage()]
    assert len(summaries) == 1  # the count, reported at close


def test_close_is_idempotent_and_drops_later_records(caplog):
    seen = []
    dispatcher = Dispatcher([seen.append])
    dispatcher.submit({"step": 1})
    dispatcher.close()
    dispatcher.close()
    dispatcher.flush()
    with caplog.at_level(logging.WARNING, logger="jaxopt_rules"):
        dispatcher.submit({"step": 2})
    assert seen == [{"step": 1}]
    assert "dropped" in caplog.text


def test_jsonl_round_trip_with_non_finite_values(tmp_path):
    path = tmp_path / "logs" / "steps.jsonl"
    records = [
        {"step": 0, "grad_norm": 1.5, "nonfinite": []},
        {"step": 1, "grad_norm": float("nan"), "nonfinite": ["['w']"]},
    ]
    with Dispatcher([path]) as dispatcher:
        for r in records:
            dispatcher.submit(r)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == records[0]
    assert lines[1] == {"step": 1, "grad_norm": "nan", "nonfinite": ["['w']"]}


def test_csv_round_trip(tmp_path):
    path = tmp_path / "steps.csv"
    with Dispatcher([jr.CsvSink(path)]) as dispatcher:
        dispatcher.submit({"step": 0, "grad_norm": 0.25, "nonfinite": ["a", "b"]})
        dispatcher.submit({"step": 100, "grad_norm": 0.5, "extra": 1})
    with path.open() as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {"step": "0", "grad_norm": "0.25", "nonfinite": "a;b"},
        {"step": "100", "grad_norm": "0.5", "nonfinite": ""},
    ]


def test_logging_sink_writes_one_line_per_record(caplog):
    with caplog.at_level(logging.INFO, logger="jaxopt_rules.steps"):
        jr.LoggingSink()({"step": 3, "grad_norm": 0.123456789})
    assert "step=3 grad_norm=0.123457" in caplog.text


def test_tensorboard_sink_needs_tensorboardx_or_writes_scalars(tmp_path):
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboardX"):
            jr.TensorBoardSink(tmp_path)
        return
    sink = jr.TensorBoardSink(tmp_path)
    sink({"step": 1, "grad_norm": 0.5, "nonfinite": ["['w']"]})
    sink.close()
    assert any(tmp_path.iterdir())


def test_bad_sinks_are_rejected_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        Dispatcher([tmp_path / "steps.txt"])
    with pytest.raises(TypeError, match="must be callable or a path"):
        Dispatcher([42])


def test_each_sink_gets_a_copy_and_an_uncopyable_record_only_counts_as_a_failure():
    first, second = [], []

    def mutating(record):
        record["tags"].append("mutated")
        first.append(record)

    dispatcher = Dispatcher([mutating, second.append])
    dispatcher.submit({"step": 0, "tags": []})
    dispatcher.submit({"step": 1, "lock": threading.Lock()})  # cannot be copied
    dispatcher.submit({"step": 2, "tags": []})
    dispatcher.close()
    assert [r["step"] for r in second] == [0, 2]
    assert second[0]["tags"] == []  # not the list the first sink changed
    assert first[0]["tags"] == ["mutated"]
    assert sum(dispatcher.failures.values()) == 2  # step 1, once per sink


# --- what a user watching the files sees ---


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("sink_class", [jr.JsonLinesSink, jr.CsvSink])
def test_each_record_is_in_the_file_as_soon_as_it_is_written(tmp_path, sink_class):
    path = tmp_path / "steps.txt"
    sink = sink_class(path)
    sink({"step": 0, "grad_norm": 0.25})
    # Another reader (tail -f, a notebook) sees it before any flush or close.
    assert len(_lines(path)) == (1 if sink_class is jr.JsonLinesSink else 2)
    sink({"step": 1, "grad_norm": 0.5})
    assert len(_lines(path)) == (2 if sink_class is jr.JsonLinesSink else 3)
    sink.close()


def test_records_of_a_running_log_step_reach_the_file_without_flush(tmp_path):
    path = tmp_path / "steps.jsonl"
    tx = jr.log_step(jr.sgd(0.1), every=1, sinks=[path])
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        _, state = update(params, state, params)
    jax.effects_barrier()  # the device handed the records over; no flush()
    deadline = time.monotonic() + 20
    while len(_lines(path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [json.loads(line)["step"] for line in _lines(path)] == [0, 1, 2]
    tx.close()


def test_file_sinks_append_by_default_and_start_empty_with_append_false(tmp_path):
    jsonl, table = tmp_path / "steps.jsonl", tmp_path / "steps.csv"
    for run in range(2):  # a resumed run continues the same files
        with Dispatcher([jsonl, table]) as dispatcher:
            dispatcher.submit({"step": run, "grad_norm": 0.5})
    assert [json.loads(line)["step"] for line in _lines(jsonl)] == [0, 1]
    with table.open() as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["0", "1"]

    sinks = [jr.JsonLinesSink(jsonl, append=False), jr.CsvSink(table, append=False)]
    with Dispatcher(sinks) as dispatcher:
        dispatcher.submit({"step": 7, "grad_norm": 0.5})
    assert [json.loads(line)["step"] for line in _lines(jsonl)] == [7]
    with table.open() as file:
        assert list(csv.DictReader(file)) == [{"step": "7", "grad_norm": "0.5"}]


def test_csv_appending_keeps_the_columns_of_the_existing_header(tmp_path):
    path = tmp_path / "steps.csv"
    with Dispatcher([jr.CsvSink(path)]) as dispatcher:
        dispatcher.submit({"step": 0, "grad_norm": 0.25, "update_norm": 0.1})
    with Dispatcher([jr.CsvSink(path)]) as dispatcher:
        dispatcher.submit({"update_norm": 0.2, "step": 1, "extra": 3})
    assert _lines(path)[0] == "step,grad_norm,update_norm"  # written once
    with path.open() as file:
        assert list(csv.DictReader(file)) == [
            {"step": "0", "grad_norm": "0.25", "update_norm": "0.1"},
            {"step": "1", "grad_norm": "", "update_norm": "0.2"},
        ]


# --- per-leaf values as path keys, in every file format ---


def _per_leaf_params():
    return {"l1": {"w": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}, "l2": [
        jnp.array([1.0]), jnp.array([2.0, 2.0])
    ]}  # fmt: skip


_PER_LEAF = {
    "grad_norm/l1/w": 5.0,
    "grad_norm/l1/b": 0.0,
    "grad_norm/l2/0": 1.0,
    "grad_norm/l2/1": np.sqrt(8.0),
}


def _one_logged_step(sinks):
    tx = jr.log_step(jr.sgd(0.1), every=1, per_leaf=True, sinks=sinks)
    params = _per_leaf_params()
    jax.jit(tx.update)(params, tx.init(params), params)
    tx.close()


def test_per_leaf_values_are_slash_separated_path_keys_in_json_lines(tmp_path):
    path = tmp_path / "steps.jsonl"
    _one_logged_step([path])
    (record,) = [json.loads(line) for line in _lines(path)]
    for key, value in _PER_LEAF.items():
        np.testing.assert_allclose(record[key], value, rtol=1e-6)
    leaves = {
        k.removeprefix("grad_norm/") for k in record if k.startswith("grad_norm/")
    }
    assert leaves == {"l1/w", "l1/b", "l2/0", "l2/1"}


def test_per_leaf_values_are_slash_separated_path_columns_in_csv(tmp_path):
    path = tmp_path / "steps.csv"
    _one_logged_step([path])
    with path.open() as file:
        (row,) = list(csv.DictReader(file))
    for key, value in _PER_LEAF.items():
        np.testing.assert_allclose(float(row[key]), value, rtol=1e-6)


class _FakeSummaryWriter:
    """Stands in for tensorboardX.SummaryWriter: records what it is given."""

    def __init__(self, logdir, **kwargs):
        self.logdir = logdir
        self.scalars = {}
        self.texts = {}
        self.closed = False

    def add_scalar(self, tag, value, global_step):
        self.scalars[tag] = (value, global_step)

    def add_text(self, tag, text, global_step):
        self.texts[tag] = (text, global_step)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_per_leaf_values_are_tensorboard_tags_grouped_by_statistic(
    tmp_path, monkeypatch
):
    fake = types.ModuleType("tensorboardX")
    fake.SummaryWriter = _FakeSummaryWriter  # pyright: ignore[reportAttributeAccessIssue]
    monkeypatch.setitem(sys.modules, "tensorboardX", fake)
    sink = jr.TensorBoardSink(tmp_path)
    _one_logged_step([sink])
    writer = sink._writer
    for key, value in _PER_LEAF.items():
        np.testing.assert_allclose(writer.scalars[key][0], value, rtol=1e-6)
        assert writer.scalars[key][1] == 0
    assert writer.closed


def test_the_example_plots_per_leaf_gradient_norms_read_back_from_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # it imports quickstart
    example = load_example("step_logging")
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": -1, "grad_norm": 9.0}\n')  # an older run: replaced
    records = example.main(str(path), epochs=1, every=10)
    assert [r["step"] for r in records] == [0, 10, 20]
    series = example.read_leaf_norms(path)
    assert sorted(series) == [f"layer_{i}/{p}" for i in range(3) for p in "bw"]
    for steps, norms in series.values():
        assert steps == [0, 10, 20]
        assert all(n > 0 for n in norms)
    for k, record in enumerate(records):  # the leaves' norms make the global one
        total = np.sqrt(sum(norms[k] ** 2 for _, norms in series.values()))
        np.testing.assert_allclose(total, record["grad_norm"], rtol=1e-5)
    assert (tmp_path / "steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
