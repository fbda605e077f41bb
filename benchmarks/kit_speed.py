"""Seconds per rule of the conformance kit, ``jaxopt_rules.testing.check_rule``.

For every rule the test suite checks (the catalog ``jaxopt_rules.REGISTRY``,
``jaxopt_rules.torch_compat.REGISTRY`` and the two rules of
``examples/custom_rule.py``, with their test hyperparameters), the wall time of
one full ``check_rule`` call: all checks, the sharding check included (the
script asks JAX for 8 virtual CPU devices before it starts). The process is
warmed first with one throwaway call, so the figures are those of a test
session past its first rule: the kit's shared programs (the example loss's
gradient, SGD for the ``partition`` check) and JAX's per-primitive
executables are compiled by then; each rule's own programs are not.

Prints a table (rule, seconds) and the median. Figures depend on the machine
and its load: most of the time is XLA compilation on the host CPU.

Usage::

    python -m benchmarks.kit_speed                 # every rule
    python -m benchmarks.kit_speed --rules adam lion torch_compat.adamw
    python -m benchmarks.kit_speed --quantized 8   # state in jr.quantized_state
"""

import argparse
import functools
import importlib.util
import inspect
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


ROOT = pathlib.Path(__file__).resolve().parents[1]

Rule = tuple[str, Callable[..., Any], dict[str, Any], dict[str, Any]]
"""(name, factory, hyperparams, check_rule options)."""


def _example_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_kit_speed_custom_rule", ROOT / "examples" / "custom_rule.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules() -> list[Rule]:
    """Every rule the test suite runs the kit on, with its kit options."""
    import jaxopt_rules as jr
    from jaxopt_rules import torch_compat

    example = _example_module()
    return (
        [
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
        + [
            (
                f"torch_compat.{s.name}",
                s.factory,
                dict(s.hyperparams),
                {"matrices_only": s.matrices_only},
            )
            for s in torch_compat.REGISTRY
        ]
        + [
            (
                "example.scaled_sgd",
                example.scaled_sgd,
                dict(example.SCALED_SGD_TEST_HYPERPARAMS),
                {},
            ),
            (
                "example.scaled_momentum",
                example.scaled_momentum,
                dict(example.SCALED_MOMENTUM_TEST_HYPERPARAMS),
                {},
            ),
        ]
    )


def quantized(factory: Callable[..., Any], bits: int) -> Callable[..., Any]:
    """``factory``, its state in ``jr.quantized_state`` (every leaf, blocks of 4)."""
    import jaxopt_rules as jr

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        return jr.quantized_state(
            factory(*args, **kwargs), bits=bits, min_size=0, block_size=4
        )

    make.__signature__ = inspect.signature(factory)  # type: ignore[attr-defined]
    make.static_args = tuple(getattr(factory, "static_args", ()))  # type: ignore[attr-defined]
    return make


def time_rule(rule: Rule) -> float:
    """Seconds of one ``check_rule`` call on ``rule``."""
    from jaxopt_rules import testing

    _, factory, hyperparams, options = rule
    start = time.perf_counter()
    testing.check_rule(factory, hyperparams, **options)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """Times the kit per rule; prints the table and the median; returns the rows."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rules", nargs="*", help="names to time (default: all)")
    parser.add_argument("--quantized", type=int, choices=(4, 8), default=None)
    args = parser.parse_args(argv)

    import jax

    try:
        jax.config.update("jax_num_cpu_devices", 8)
    except RuntimeError:  # JAX already started: the sharding check may not run
        pass
    import jaxopt_rules as jr

    selected = rules()
    if args.rules:
        unknown = set(args.rules) - {name for name, *_ in selected}
        if unknown:
            parser.error(f"unknown rules {sorted(unknown)}")
        selected = [r for r in selected if r[0] in args.rules]
    if args.quantized:
        selected = [
            (f"{n}+quantized{args.quantized}", quantized(f, args.quantized), h, o)
            for n, f, h, o in selected
        ]
    # Throwaway: the process's first call also compiles what every rule shares.
    time_rule(("warm-up", jr.sgd, {"learning_rate": 1e-3, "momentum": 0.9}, {}))
    rows = [(rule[0], time_rule(rule)) for rule in selected]
    width = max(len(name) for name, _ in rows)
    print(f"{'rule':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f}")
    print(f"{'median':<{width}}  {statistics.median(s for _, s in rows):7.2f}")
    return rows


if __name__ == "__main__":
    main()
