"""Which float32 implementation is closer to the exact step: ours or the reference?

Where a drop-in and its reference differ in float32 by more than the registry's
1e-6 (the rules listed as known float32 differences in tests/test_reference.py),
both are measured against the reference run in float64 on the same float32
inputs. For each option set, 100 steps are taken on the kit's example loss by
the reference in float32; at every step the reference's state, parameters and
gradients go into

* the reference in float32,
* the reference in float64 (inputs cast up: the yardstick),
* the drop-in in float32 (the reference's state converted with
  ``jr.from_optax``),

and the worst relative error of each update over the 100 steps is printed.
Relative error: max |a - e| over all leaves / max |e| over all leaves.

Usage: ``python -m benchmarks.float64_yardstick [--rules madgrad ...]``
(default: madgrad, schedule_free_sgd, schedule_free_adamw).
"""

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr
from jaxopt_rules.testing import example_params, reference_arguments, relative_error
from jaxopt_rules.testing._problems import example_grads


STEPS = 100
DEFAULT_RULES = ("madgrad", "schedule_free_sgd", "schedule_free_adamw", "muon")


def _to_float64(tree: Any) -> Any:
    def cast(x: Any) -> Any:
        if isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(
            x.dtype, jnp.floating
        ):
            return jnp.asarray(x, jnp.float64)
        return x

    return jax.tree.map(cast, tree)


def yardstick(spec: jr.RuleSpec, case: int) -> dict[str, float]:
    """Worst errors over :data:`STEPS` teacher-forced steps, as in the docstring."""
    reference_factory = spec.reference_factory
    assert reference_factory is not None  # (drop-ins only: see main)
    kwargs = reference_arguments(
        spec.factory, reference_factory, spec.reference_cases[case], np.float32
    )
    reference = reference_factory(**kwargs)
    ours = spec.factory(**kwargs)
    params = example_params(jnp.float32)
    state = reference.init(params)
    ref_update = jax.jit(reference.update)
    our_update = jax.jit(ours.update)
    grads_of = jax.jit(example_grads)
    worst = {"ours": 0.0, "reference": 0.0, "ours vs reference": 0.0}
    for t in range(STEPS):
        grads = grads_of(params)
        ref32, new_state = ref_update(grads, state, params)
        ref64, _ = ref_update(
            _to_float64(grads), _to_float64(state), _to_float64(params)
        )
        our_state = jr.from_optax(state, ours, params, count=t)
        ours32, _ = our_update(grads, our_state, params)
        worst["ours"] = max(worst["ours"], relative_error(ours32, ref64))
        worst["reference"] = max(worst["reference"], relative_error(ref32, ref64))
        worst["ours vs reference"] = max(
            worst["ours vs reference"], relative_error(ours32, ref32)
        )
        params = optax.apply_updates(params, ref32)
        state = new_state
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", nargs="*", default=list(DEFAULT_RULES))
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    specs = {spec.name: spec for spec in jr.REGISTRY if spec.is_drop_in}
    print(
        f"{'rule':22s} {'case':>4s} {'ours vs f64':>12s} {'ref vs f64':>11s} "
        f"{'ours vs ref':>12s}"
    )
    for name in args.rules:
        spec = specs[name]
        for case in range(len(spec.reference_cases)):
            w = yardstick(spec, case)
            print(
                f"{name:22s} {case:4d} {w['ours']:12.1e} {w['reference']:11.1e} "
                f"{w['ours vs reference']:12.1e}"
            )


if __name__ == "__main__":
    main()
