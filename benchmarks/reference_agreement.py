"""How closely each registered rule reproduces its reference, per option set.

Prints, for every rule and every option set in its registry entry:

* float32, 100 teacher-forced steps (both implementations get the reference's
  state, params and gradients at every step): worst relative error of the
  updates and of the state slots;
* float64, 100 free-running steps: relative error of the final parameters;
* float32, 100 free-running steps with the hyperparameters as written (Python
  floats): relative error of the final parameters. This figure mixes the
  hyperparameter-precision policy (see the README) with the amplification of
  rounding by the dynamics; it is shown, not asserted. As a yardstick, the last
  column is the same figure between the reference and the reference wrapped in
  ``optax.inject_hyperparams`` (same formulas, float32 hyperparameters).

Relative error: max |a - e| over all leaves / max |e| over all leaves.

Usage: ``python benchmarks/reference_agreement.py [--rules adam lamb]``.
"""

import argparse
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr
from jaxopt_rules import testing


def relative_error(actual: Any, expected: Any) -> float:
    """max |a - e| / max |e| over all leaves of two trees; inf if either holds
    a non-finite value (a comparison that must not pass by accident)."""
    pairs = list(zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True))
    if not pairs:
        return 0.0
    arrays = [(np.asarray(a, np.float64), np.asarray(e, np.float64)) for a, e in pairs]
    if not all(np.isfinite(a).all() and np.isfinite(e).all() for a, e in arrays):
        return float("inf")
    diff = max(float(np.max(np.abs(a - e))) for a, e in arrays)
    scale = max(float(np.max(np.abs(e))) for _, e in arrays)
    return diff / scale if scale > 0 else diff


def arguments(spec: jr.RuleSpec, case: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """The rule's arguments (defaults included) the reference takes, as ``dtype``."""
    bound = inspect.signature(spec.factory).bind(**case)
    bound.apply_defaults()
    accepted = inspect.signature(spec.reference_factory).parameters
    cast = np.dtype(dtype).type if dtype is not None else (lambda v: v)
    return {
        k: cast(v) if isinstance(v, float) else v
        for k, v in bound.arguments.items()
        if k in accepted
    }


def free_run(tx: optax.GradientTransformation, dtype: Any, steps: int = 100) -> Any:
    """Params after ``steps`` jitted steps on the kit's example loss."""
    params = testing.example_params(dtype)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(testing.example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def teacher_forced(spec: jr.RuleSpec, kwargs: dict[str, Any]) -> tuple[float, float]:
    """Worst float32 relative error of updates and of slots over 100 steps."""
    ours, ref = spec.factory(**kwargs), spec.reference_factory(**kwargs)
    params = testing.example_params(jnp.float32)
    ref_state, our_state = ref.init(params), ours.init(params)
    slots = our_state._fields[1:]
    our_update, ref_update = jax.jit(ours.update), jax.jit(ref.update)
    worst_u = worst_s = 0.0
    for step in range(100):
        grads = testing.example_grads(params)
        forced = our_state._replace(
            count=jnp.asarray(step, jnp.int32),
            **{s: optax.tree.get(ref_state, s) for s in slots},
        )
        updates, new_state = our_update(grads, forced, params)
        expected, ref_state = ref_update(grads, ref_state, params)
        worst_u = max(worst_u, relative_error(updates, expected))
        for s in slots:
            worst_s = max(
                worst_s,
                relative_error(getattr(new_state, s), optax.tree.get(ref_state, s)),
            )
        params = optax.apply_updates(params, expected)
    return worst_u, worst_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", nargs="*")
    args = parser.parse_args()
    print(
        f"{'rule':15s} {'options':52s} {'f32 upd':>8s} {'f32 slots':>9s} "
        f"{'f64 params':>10s} {'f32 free':>9s} {'ref vs inj':>10s}"
    )
    for spec in jr.REGISTRY:
        if args.rules and spec.name not in args.rules:
            continue
        for case in spec.reference_cases:
            upd, slots = teacher_forced(spec, arguments(spec, dict(case), np.float32))
            with jax.enable_x64(True):
                kw64 = arguments(spec, dict(case), np.float64)
                f64 = relative_error(
                    free_run(spec.factory(**kw64), jnp.float64),
                    free_run(spec.reference_factory(**kw64), jnp.float64),
                )
            kw = arguments(spec, dict(case), None)
            ref_free = free_run(spec.reference_factory(**kw), jnp.float32)
            free = relative_error(free_run(spec.factory(**kw), jnp.float32), ref_free)
            static = tuple(k for k in ("mask",) if k in kw)
            injected = optax.inject_hyperparams(
                spec.reference_factory, static_args=static
            )(**kw)
            yardstick = relative_error(free_run(injected, jnp.float32), ref_free)
            label = ", ".join(
                f"{k}={'<fn>' if callable(v) else v}"
                for k, v in case.items()
                if k != "learning_rate"
            )
            print(
                f"{spec.name:15s} {label[:52] or '(defaults)':52s} {upd:8.1e} "
                f"{slots:9.1e} {f64:10.1e} {free:9.1e} {yardstick:10.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
