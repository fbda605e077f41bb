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

Usage: ``python -m benchmarks.reference_agreement [--rules adam lamb]``.
"""

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxopt_rules as jr
from jaxopt_rules import testing
from jaxopt_rules.testing import (
    free_run,
    free_running_error,
    reference_arguments,
    relative_error,
    teacher_forced_errors,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", nargs="*")
    args = parser.parse_args()
    print(
        f"{'rule':20s} {'options':52s} {'f32 upd':>8s} {'f32 slots':>9s} "
        f"{'f64 params':>10s} {'f32 free':>9s} {'ref vs inj':>10s}"
    )
    for spec in jr.REGISTRY:
        if (args.rules and spec.name not in args.rules) or not spec.is_drop_in:
            continue  # (rules optax lacks: tests/test_authors.py)
        for case in spec.reference_cases:
            ours, ref = spec.factory, spec.reference_factory
            assert ref is not None
            worst = teacher_forced_errors(ours, ref, case)
            upd = worst.pop("updates")
            slots = max(worst.values(), default=0.0)
            with jax.enable_x64(True):
                f64 = free_running_error(ours, ref, case, dtype=jnp.float64)
            kw = reference_arguments(ours, ref, case)
            free = free_running_error(ours, ref, kw, round_hyperparams=False)
            # Structural arguments stay Python values (a mask, adafactor's
            # factoring threshold): the rule's static arguments, and masks.
            static = tuple(k for k in kw if k in spec.static_args or "mask" in k)
            injected = optax.inject_hyperparams(ref, static_args=static)(**kw)
            extra = spec.update_args  # the loss value, for rules that read it
            # DP-SGD: both fed batches of examples, as the rule is.
            injected, plain = (
                testing.fed_plain_gradients(tx, ours) for tx in (injected, ref(**kw))
            )
            yardstick = relative_error(
                free_run(injected, jnp.float32, update_args=extra),
                free_run(plain, jnp.float32, update_args=extra),
            )
            label = ", ".join(
                f"{k}={'<fn>' if callable(v) else v}"
                for k, v in case.items()
                if k != "learning_rate"
            )
            print(
                f"{spec.name:20s} {label[:52] or '(defaults)':52s} {upd:8.1e} "
                f"{slots:9.1e} {f64:10.1e} {free:9.1e} {yardstick:10.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
