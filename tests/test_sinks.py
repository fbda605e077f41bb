"""Step-record delivery: order, failing sinks, flush/close, file formats."""

import csv
import json
import logging
import threading
import time

import pytest

import jaxopt_rules as jr
from jaxopt_rules.wrappers import Dispatcher


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
