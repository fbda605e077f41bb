"""benchmarks/kit_speed.py runs: two rules, no timing asserted."""

from helpers import load_benchmark, rules_under_test


kit_speed = load_benchmark("kit_speed")


def test_the_benchmark_lists_the_rules_the_tests_check():
    assert [name for name, *_ in kit_speed.rules()] == [
        name for name, *_ in rules_under_test()
    ]


def test_kit_speed_times_two_rules(capsys):
    rows = kit_speed.main(["--rules", "sgd", "example.scaled_sgd"])
    assert [name for name, _ in rows] == ["sgd", "example.scaled_sgd"]
    assert all(seconds > 0 for _, seconds in rows)
    out = capsys.readouterr().out
    assert "sgd" in out
    assert "median" in out


def test_kit_speed_times_a_quantized_rule(capsys):
    rows = kit_speed.main(["--rules", "lion", "--quantized", "4"])
    assert [name for name, _ in rows] == ["lion+quantized4"]
