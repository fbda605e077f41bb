"""optax's optimizer wrappers take the catalog's rules as they are.

``optax.lookahead``, ``optax.MultiSteps`` and ``optax.contrib``'s
``schedule_free``, ``sam``, ``mechanize`` and ``reduce_on_plateau`` wrap any
gradient transformation: they call its ``init`` and ``update`` and combine its
states with tree maps (``jnp.where``, ``cond * new + (1 - cond) * old``), which
this package's NamedTuple states of arrays support. None of them needs a copy
here; this file checks that each, wrapped around a rule of the catalog, follows
the same trajectory as around optax's namesake of the rule: float64, 30
jitted steps on the conformance kit's example loss (2-d, 1-d, 4-d, scalar and
``None`` leaves), every step's parameters (and the wrapper's own outputs:
lookahead's slow parameters, schedule-free's evaluation parameters, the
plateau's scale) within 1e-12 relative.

Each wrapper is called as optax documents it: lookahead on
``LookaheadParams`` with gradients at the fast parameters, schedule-free's
evaluation parameters from ``schedule_free_eval_params``, SAM with an outer
and an adversarial optimizer (in opaque mode with ``grad_fn`` for its second
gradient evaluation), ``reduce_on_plateau`` chained after the rule with the
loss as ``value=``.

Each case compiles two programs, so a plain run checks every wrapper with Adam
and one more rule (``QUICK``: sgd, rmsprop, lion or lamb, each twice);
``pytest -m slow`` runs every wrapper with every rule of the registry. Where a
check needs a wrapper to have acted (lookahead's parameters apart, the plateau's
scale reduced, ``MultiSteps`` moving on every third step only), it is asserted
on optax's trajectory.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from helpers import DROP_INS, build, build_reference

import jaxopt_rules as jr
from jaxopt_rules import testing
from jaxopt_rules.rules import RuleSpec


STEPS = 30
TOLERANCE = 1e-12

Transform = Any  # optax.GradientTransformation, or optax.MultiSteps
Sgd = Callable[..., optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class Wrapper:
    """An optax wrapper, and how a training loop calls it.

    Attributes:
        name: the test id.
        wrap: ``wrap(rule, sgd)`` wraps the rule under test; ``sgd`` (ours or
            optax's) builds any other optimizer the wrapper needs.
        start: the wrapper's parameters from plain ones.
        grad_at: where the gradient is taken, from the wrapper's parameters.
        update_args: extra keyword arguments of ``update``, from the point the
            gradient is taken at.
        outputs: what is compared at each step, from parameters and state.
        exercised: a check, on optax's trajectory, that the wrapper acted.
        forwards_update_args: the wrapper hands ``update``'s extra keyword
            arguments to the rule (``lookahead`` and ``sam`` do not, so a rule
            that needs the loss as ``value=`` cannot run in them, optax's
            namesake neither).
        mixes_states: the wrapper blends old and new states arithmetically
            (``c * new + (1 - c) * old``), which optax's typed PRNG keys
            refuse: optax's noisy rules cannot run in it.
    """

    name: str
    wrap: Callable[[optax.GradientTransformation, Sgd], Transform]
    start: Callable[[Any], Any] = lambda params: params
    grad_at: Callable[[Any], Any] = lambda params: params
    update_args: Callable[[Any], dict[str, Any]] = lambda at: {}
    outputs: Callable[[Any, Any], dict[str, Any]] = lambda params, state: {
        "params": params
    }
    exercised: Callable[[dict[str, Any]], bool] | None = None
    forwards_update_args: bool = True
    mixes_states: bool = False


def _lookahead_outputs(params: Any, state: Any) -> dict[str, Any]:
    del state
    return {"fast": params.fast, "slow": params.slow}


def _fast_and_slow_differ(outputs: dict[str, Any]) -> bool:
    return testing.relative_error(outputs["fast"], outputs["slow"]) > 1e-3


def _schedule_free_outputs(params: Any, state: Any) -> dict[str, Any]:
    return {
        "params": params,
        "eval_params": optax.contrib.schedule_free_eval_params(state, params),
        "z": state.z,
    }


def _mechanic_outputs(params: Any, state: Any) -> dict[str, Any]:
    return {"params": params, "s": state.s, "r": state.r}


def _plateau_outputs(params: Any, state: Any) -> dict[str, Any]:
    plateau = state[-1]
    return {"params": params, "scale": plateau.scale}


def _scale_was_reduced(outputs: dict[str, Any]) -> bool:
    return float(np.min(outputs["scale"])) < 1.0


def _only_every_third_step_moves(outputs: dict[str, Any]) -> bool:
    """Parameters move on some third calls and on no other (``every_k=3``).

    (Not on every third call: some rules' first step is zero, ADOPT's and
    Rprop's.)
    """
    leaves = jax.tree.leaves(outputs["params"])
    moved = {
        i: any(bool(np.any(x[i] != x[i - 1])) for x in leaves) for i in range(1, STEPS)
    }
    return any(moved.values()) and not any(moved[i] for i in moved if i % 3 != 2)


def _value(at: Any) -> dict[str, Any]:
    return {"value": testing.example_loss(at)}


def _grad_fn(at: Any) -> dict[str, Any]:
    del at
    return {"grad_fn": lambda params, i: testing.example_grads(params)}


def _adversary(sgd: Sgd) -> optax.GradientTransformation:
    """SAM's adversarial optimizer as its docs build it: normalized SGD."""
    return optax.chain(optax.contrib.normalize(), sgd(0.05))


WRAPPERS = [
    Wrapper(
        "lookahead",
        lambda rule, sgd: optax.lookahead(rule, sync_period=5, slow_step_size=0.5),
        start=optax.LookaheadParams.init_synced,
        grad_at=lambda params: params.fast,
        outputs=_lookahead_outputs,
        exercised=_fast_and_slow_differ,
        forwards_update_args=False,
    ),
    Wrapper(
        # The fast optimizer's state is reset with a tree map over it.
        "lookahead-reset_state",
        lambda rule, sgd: optax.lookahead(
            rule, sync_period=4, slow_step_size=0.3, reset_state=True
        ),
        start=optax.LookaheadParams.init_synced,
        grad_at=lambda params: params.fast,
        outputs=_lookahead_outputs,
        exercised=_fast_and_slow_differ,
        forwards_update_args=False,
        mixes_states=True,
    ),
    Wrapper(
        "schedule_free",
        lambda rule, sgd: optax.contrib.schedule_free(
            rule, optax.warmup_constant_schedule(0.0, 0.1, 5), b1=0.9
        ),
        outputs=_schedule_free_outputs,
    ),
    Wrapper(
        # One call per gradient: adversarial and outer steps alternate.
        "sam",
        lambda rule, sgd: optax.contrib.sam(rule, _adversary(sgd), sync_period=2),
        forwards_update_args=False,
        mixes_states=True,
    ),
    Wrapper(
        # One call per outer step; SAM evaluates the gradient again itself.
        "sam-opaque_mode",
        lambda rule, sgd: optax.contrib.sam(
            rule, _adversary(sgd), sync_period=3, opaque_mode=True
        ),
        update_args=_grad_fn,
        forwards_update_args=False,
        mixes_states=True,
    ),
    Wrapper(
        # With the default s_init=1e-6 the parameters move by about 1e-4 in 30
        # steps, too little for the comparison to tell two rules apart.
        "mechanize",
        lambda rule, sgd: optax.contrib.mechanize(rule, s_init=1e-3),
        outputs=_mechanic_outputs,
    ),
    Wrapper(
        # rtol=0.5: hardly any step counts as an improvement, so the scale drops.
        "reduce_on_plateau",
        lambda rule, sgd: optax.chain(
            rule,
            optax.contrib.reduce_on_plateau(
                factor=0.5, patience=2, rtol=0.5, cooldown=1, accumulation_size=2
            ),
        ),
        update_args=_value,
        outputs=_plateau_outputs,
        exercised=_scale_was_reduced,
    ),
    Wrapper(
        "MultiSteps",
        lambda rule, sgd: optax.MultiSteps(
            rule, every_k_schedule=3, accumulator_dtype=jnp.float64
        ),
        exercised=_only_every_third_step_moves,
    ),
]

QUICK = {
    "lookahead": "lamb",
    "lookahead-reset_state": "rmsprop",
    "schedule_free": "sgd",
    "sam": "sgd",
    "sam-opaque_mode": "lamb",
    "mechanize": "lion",
    "reduce_on_plateau": "rmsprop",
    "MultiSteps": "lion",
}
"""Besides Adam, the rule each wrapper runs with in a plain ``pytest`` (plain
SGD with momentum, adaptive, sign and trust-ratio rules; about a second of
compilation per program, two programs per case)."""


def _cases() -> list:
    return [
        pytest.param(
            wrapper,
            spec,
            id=f"{wrapper.name}-{spec.name}",
            marks=()
            if spec.name in ("adam", QUICK[wrapper.name])
            else (pytest.mark.slow,),
        )
        for wrapper in WRAPPERS
        for spec in DROP_INS
    ]


def _update_args(spec: RuleSpec) -> tuple[str, ...]:
    """The extra ``update`` arguments the rule declares (the loss as ``value``)."""
    return tuple(getattr(getattr(spec.factory, "definition", None), "extra_args", ()))


def trajectories(
    wrapper: Wrapper, transforms: tuple[Transform, ...], spec: RuleSpec
) -> list[dict[str, Any]]:
    """``wrapper.outputs`` after each of ``STEPS`` steps, stacked, in NumPy.

    One program runs every transform (one compilation per case).
    """
    matrices_only = getattr(spec, "matrices_only", False)
    params = wrapper.start(
        testing.example_params(jnp.float64, matrices_only=matrices_only)
    )
    rule_args = _update_args(spec)

    def run(tx: Transform, params: Any) -> Any:
        def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], Any]:
            params, state = carry
            at = wrapper.grad_at(params)
            extra = wrapper.update_args(at)
            if "value" in rule_args:
                extra = {**extra, "value": testing.example_loss(at)}
            # sophia's loss, sophia_g's logits: functions of the parameters
            extra = {**extra, **testing.loss_functions(rule_args, testing.example_loss)}
            updates, new_state = tx.update(
                testing.example_grads(at), state, params, **extra
            )
            # optax's lookahead(reset_state=True) and sam turn a bool in the
            # wrapped state (optax's optimistic_gradient_descent keeps one) into
            # an integer; a scan needs fixed types, so the state keeps its
            # dtypes (exact: those values are 0 or 1).
            state = jax.tree.map(
                lambda new, old: jnp.astype(new, jnp.result_type(old)),
                new_state,
                state,
            )
            params = optax.apply_updates(params, updates)
            return (params, state), wrapper.outputs(params, state)

        return jax.lax.scan(step, (params, tx.init(params)), length=STEPS)[1]

    outputs = jax.jit(lambda params: [run(tx, params) for tx in transforms])(params)
    return jax.tree.map(np.asarray, outputs)


def test_every_wrapper_runs_quickly_with_a_registered_rule():
    names = {spec.name for spec in jr.REGISTRY}
    assert QUICK.keys() == {wrapper.name for wrapper in WRAPPERS}
    assert {"adam", *QUICK.values()} <= names


@pytest.mark.parametrize(("wrapper", "spec"), _cases())
def test_wrapper_follows_optax_trajectory(wrapper: Wrapper, spec: RuleSpec):
    needed = _update_args(spec)
    if set(needed) - {"value", "obj_fn", "logits_fn"}:
        pytest.skip(
            f"{spec.name}'s update needs {needed}; this test passes value, obj_fn "
            "and logits_fn"
        )
    if needed and not wrapper.forwards_update_args:
        pytest.skip(
            f"{spec.name}'s update needs the loss ({', '.join(needed)}), which "
            f"{wrapper.name} does not hand to the rule it wraps (nor to optax's "
            "namesake)"
        )
    if wrapper.mixes_states and spec.factory.definition.takes_key:
        pytest.skip(
            f"optax's {spec.name} keeps a typed PRNG key, which {wrapper.name}'s "
            "arithmetic on states refuses: there is no optax trajectory to follow"
        )
    with jax.enable_x64(True):
        # The reference's first option set over the kit's hyperparameters: the
        # kit's may be a tiny step (sign_sgd's 3e-5) that leaves lookahead's
        # fast and slow weights too close to tell whether it ran.
        case = {**spec.hyperparams, **spec.reference_cases[0]}
        kwargs = testing.reference_arguments(
            spec.factory, spec.reference_factory, case, np.float64
        )
        ours, theirs = trajectories(
            wrapper,
            (
                wrapper.wrap(build(spec.factory, **kwargs), jr.sgd),
                wrapper.wrap(build_reference(spec, **kwargs), optax.sgd),
            ),
            spec,
        )
    assert ours.keys() == theirs.keys()
    for key in theirs:
        leaves = jax.tree.leaves(ours[key])
        assert all(leaf.dtype == np.float64 for leaf in leaves), key
        error = testing.relative_error(ours[key], theirs[key])
        assert error <= TOLERANCE, (key, error)
    if wrapper.exercised is not None:
        assert wrapper.exercised(theirs)
