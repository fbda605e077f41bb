"""Comparing a rule with an independent reference implementation.

Two measurements, on the kit's example loss (2-d, 1-d, 4-d and scalar leaves):

* :func:`teacher_forced_errors`: at every step both implementations get the
  same gradients, parameters and state (the reference's), so each step's
  formula is compared on its own, without the dynamics amplifying rounding;
* :func:`free_running_error`: each implementation follows its own trajectory.

Errors are relative in the max norm over the whole tree, and infinite if a
value is not finite (so a comparison never passes on NaNs).

Hyperparameter precision: a rule built with :func:`jaxopt_rules.rule` rounds
every float hyperparameter to its compute dtype before using it, while optax
evaluates expressions such as ``1 - b2`` on the Python float in double
precision. In float32 that alone moves AdaBelief's second moment by about
1e-5 relative, which hides the difference between a bug and the rounding. Both
comparisons therefore hand both implementations the same hyperparameter
values, rounded to the compute dtype, unless ``round_hyperparams=False``.
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules.checkpoint._convert import merge_masked, per_leaf, relayout
from jaxopt_rules.testing._problems import example_grads, example_loss, example_params
from jaxopt_rules.testing._update_args import (
    FUNCTIONS,
    check_known,
    declared_update_args,
    fed_plain_gradients,
    loss_functions,
    update_args as compute_update_args,
)


Factory = Callable[..., optax.GradientTransformation]


def relative_error(actual: Any, expected: Any) -> float:
    """``max |a - e| / max |e|`` over all leaves; inf if any value is not finite."""
    pairs = [
        (np.asarray(a, np.float64), np.asarray(e, np.float64))
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    ]
    if not pairs:
        return 0.0
    if not all(np.isfinite(a).all() and np.isfinite(e).all() for a, e in pairs):
        return float("inf")
    diff = max(float(np.max(np.abs(a - e))) for a, e in pairs)
    scale = max(float(np.max(np.abs(e))) for _, e in pairs)
    return diff / scale if scale > 0 else diff


def _arguments(
    fn: Callable[..., Any], hyperparams: Mapping[str, Any]
) -> dict[str, Any]:
    """Every argument ``fn(**hyperparams)`` would see, by name, defaults applied."""
    bound = inspect.signature(fn).bind(**hyperparams)
    bound.apply_defaults()
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = value
    return arguments


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    parameters = inspect.signature(fn).parameters
    if name in parameters:
        return parameters[name].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _round_floats(arguments: Mapping[str, Any], dtype: Any | None) -> dict[str, Any]:
    if dtype is None:
        return dict(arguments)
    scalar = np.dtype(dtype).type

    def round_(v: Any) -> Any:
        if isinstance(v, float):
            return scalar(v)
        if type(v) is tuple:  # grouped arguments: optax's ``betas=(b1, b2)``
            return tuple(map(round_, v))
        return v

    return {k: round_(v) for k, v in arguments.items()}


def _compute_dtype(dtype: Any) -> np.dtype:
    """The dtype a rule computes in for parameters of ``dtype`` (at least float32)."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def reference_arguments(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    dtype: Any | None = None,
) -> dict[str, Any]:
    """All of ``factory``'s arguments (defaults applied) that ``reference`` takes.

    The factory's defaults are handed to the reference, so both implementations
    run with the same hyperparameter values (a difference between their
    defaults is not what this compares). With ``dtype``, every Python float
    becomes a scalar of that dtype, so both implementations compute with the
    same rounded values; :func:`teacher_forced_errors` and
    :func:`free_running_error` do this by default.

    Args:
        factory: the factory under test.
        reference: the independent implementation.
        hyperparams: keyword arguments for ``factory``.
        dtype: round Python floats to this dtype; ``None`` keeps them.

    Returns:
        Keyword arguments for ``reference`` (and, equally, for ``factory``).

    Example::

        kwargs = reference_arguments(my_adam, optax.adam, {"learning_rate": 1e-3},
                                     np.float32)
        # {"learning_rate": float32(0.001), "b1": float32(0.9), ...}
    """
    return _round_floats(
        {
            k: v
            for k, v in _arguments(factory, hyperparams).items()
            if _accepts(reference, k)
        },
        dtype,
    )


def _both_arguments(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    dtype: Any,
    round_hyperparams: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for ``factory`` and for ``reference``."""
    rounding = _compute_dtype(dtype) if round_hyperparams else None
    ours = _round_floats(_arguments(factory, hyperparams), rounding)
    return ours, reference_arguments(factory, reference, hyperparams, rounding)


def _like_params(value: Any, params: Any) -> bool:
    """One entry per parameter leaf, or a part of such a tree.

    An entry is an array, or a list of arrays (optax's SM3); a part has
    arrays at some leaves and ``MaskedNode`` holes at the others (a state of
    ``optax.partition``: ``optax.contrib.muon``'s).
    """
    return (
        per_leaf(value, params) is not None or merge_masked([value], params) is not None
    )


def _is_slot(value: Any, params: Any) -> bool:
    """A slot: shaped like the parameters, or one floating scalar (per tree)."""
    if _like_params(value, params):
        return True
    return (
        isinstance(value, jax.Array | np.ndarray)
        and np.ndim(value) == 0
        and jnp.issubdtype(value.dtype, jnp.floating)
    )


def _is_slot_at(path: Any, value: Any, params: Any) -> bool:
    """:func:`_is_slot`, a scalar only as a state field (not a parameter's key)."""
    if _like_params(value, params):
        return True
    item = (jax.tree_util.DictKey, jax.tree_util.SequenceKey)
    return bool(path) and not isinstance(path[-1], item) and _is_slot(value, params)


def _state_fields(state: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` of every NamedTuple field in ``state``, nested ones too."""
    fields: list[tuple[str, Any]] = []

    def visit(node: Any) -> None:
        names = getattr(node, "_fields", None)
        if isinstance(node, tuple) and names is not None:
            fields.extend(zip(names, node, strict=True))
            children = list(node)
        elif isinstance(node, tuple | list):
            children = list(node)
        elif isinstance(node, dict):
            children = list(node.values())
        else:
            return
        for child in children:
            visit(child)

    visit(state)
    return fields


def _slot_names(our_state: Any, params: Any) -> list[str]:
    """Our state's slots: fields shaped like the parameters, and per-tree scalars."""
    return [
        name
        for name in our_state._fields
        if name != "count" and _is_slot(getattr(our_state, name), params)
    ]


def _match_slots(
    ref_state: Any, params: Any, slots: list[str], slot_names: Mapping[str, str]
) -> dict[str, str]:
    """Our slot -> the reference state's field holding it, checked.

    A slot's field is ``slot_names.get(slot, slot)``; it must name exactly one
    field of the reference's state shaped like the parameters.

    Raises:
        ValueError: ``slot_names`` maps a name that is not a slot, or a slot's
            field is missing, ambiguous or not shaped like the parameters; the
            message lists the reference state's fields and says how to map.
    """
    unknown = [name for name in slot_names if name not in slots]
    if unknown:
        raise ValueError(
            f"slot_names maps {unknown}, which are not slots of the rule under "
            f"test; its slots are {slots}"
        )
    wanted = {slot: slot_names.get(slot, slot) for slot in slots}
    fields = _state_fields(ref_state)
    names = list(dict.fromkeys(name for name, _ in fields))
    shaped = [n for n in names if any(_is_slot(v, params) for m, v in fields if m == n)]
    unclaimed = [n for n in shaped if n not in wanted.values()]
    for slot, name in wanted.items():
        found_at = optax.tree.get_all_with_path(ref_state, name)
        found = [v for _, v in found_at]
        matching = [v for p, v in found_at if _is_slot_at(p, v, params)]
        if len(matching) == 1 or (
            len(matching) > 1 and merge_masked(matching, params) is not None
        ):
            continue
        mapped = f" (slot_names maps {slot!r} to {name!r})" if name != slot else ""
        if len(matching) > 1:
            raise ValueError(
                f"the reference's state has {len(matching)} fields named {name!r}"
                f"{mapped} shaped like the parameters (a chain of transforms?), so "
                f"the slot {slot!r} is ambiguous; compare with a reference whose "
                "state has one"
            )
        problem = (
            f"has no field {name!r}{mapped}"
            if not found
            else f"has a field {name!r}{mapped}, but it is not shaped like the "
            "parameters"
        )
        raise ValueError(
            f"cannot find the slot {slot!r} of the rule under test in the "
            f"reference's state: it {problem}. The reference's state has the "
            f"fields {', '.join(names)}; shaped like the parameters and not "
            f"matched to another slot: {', '.join(unclaimed) or 'none'}. Pass "
            f"slot_names={{{slot!r}: <the reference's field>}}, e.g. "
            f"slot_names={{{slot!r}: {(unclaimed or ['...'])[0]!r}}}"
        )
    return wanted


def _reference_slots(
    ref_state: Any, params: Any, fields: Mapping[str, str], our_state: Any
) -> dict[str, Any]:
    """Our slot -> its value in the reference's state (fields from _match_slots).

    A value the reference keeps as a list of arrays per leaf where ours keeps
    one array (optax's SM3) is joined into our layout (``relayout``); parts
    of one slot kept by ``optax.partition`` per label (``MaskedNode`` holes)
    are merged into one tree (``merge_masked``).
    """

    def shaped(path: Any, value: Any) -> bool:
        return _is_slot_at(path, value, params)

    out = {}
    for slot, name in fields.items():
        found = optax.tree.get_all_with_path(ref_state, name, filtering=shaped)
        merged = merge_masked([v for _, v in found], getattr(our_state, slot))
        if merged is not None:  # optax.partition's parts of one slot, joined
            out[slot] = merged
            continue
        ((_, value),) = found  # (_match_slots checked there is one)
        relaid = relayout(value, getattr(our_state, slot), f"the reference's {name}")
        out[slot] = value if relaid is None else relaid
    return out


def _built(
    factory: Factory, kwargs: Mapping[str, Any], build: Factory | None = None
) -> Any:
    """``(build or factory)(**kwargs)``, fed per-example batches where needed.

    A per-example rule (DP-SGD) and its reference both get the kit's batch of
    examples of each gradient (:func:`as_per_example`).
    """
    return fed_plain_gradients((build or factory)(**kwargs), factory)


def teacher_forced_errors(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    *,
    steps: int = 100,
    dtype: Any = jnp.float32,
    slot_names: Mapping[str, str] | None = None,
    round_hyperparams: bool = True,
    update_args: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Worst relative error of the updates and of each state slot, per step.

    At every step both implementations get the same gradients, parameters
    and state (the reference's slots copied into ours, our ``count`` set to
    the step number), so each step's formula is compared on its own. State
    fields other than the slots and the count (the PRNG key of a rule that
    draws random numbers) carry on from our own previous step, so a key split
    otherwise than the reference's shows in the updates.

    ``factory`` must build rules of this package (a NamedTuple state of
    ``count`` and named slots; a slot is a field shaped like the parameters).
    Each slot is found in the reference's state by name, with
    ``optax.tree.get``; a reference that names it differently (optax's Adan
    calls the previous gradient ``g``) needs ``slot_names``.

    Hyperparameters: with ``round_hyperparams`` (the default), every Python
    float the factory receives, given or default, is rounded to the compute
    dtype (``dtype``, at least float32) and the same values are handed to the
    reference (see :func:`reference_arguments`): this package's rules round
    them before use while optax computes ``1 - b2`` in double precision, a
    difference of about 1e-5 relative in float32 that says nothing about the
    formula. ``round_hyperparams=False`` passes the floats as given.

    Args:
        factory: the factory under test.
        reference: the independent implementation (an optax-style factory).
        hyperparams: keyword arguments for ``factory``; those the reference
            takes go to it too, with the factory's defaults.
        steps: number of steps.
        dtype: dtype of the parameters and gradients.
        slot_names: our slot name -> the reference's field name, for slots
            named differently (``{"prev_grad": "g"}``).
        round_hyperparams: round float hyperparameters to the compute dtype.
        update_args: extra arguments of ``update`` both implementations get,
            computed from the example loss at the parameters (``"value"``,
            ``"value_fn"``, ``"grad"``); default: those ``factory``'s rule
            declares.

    Returns:
        ``{"updates": err, <slot>: err, ...}``, the worst over ``steps`` steps.

    Raises:
        ValueError: a slot has no field of that name in the reference's state
            (the message lists the fields there), or ``slot_names`` names a
            slot the rule does not have.

    Example::

        errors = teacher_forced_errors(my_adan, optax.adan, {"learning_rate": 1e-3},
                                       slot_names={"prev_grad": "g"})
        assert max(errors.values()) <= 1e-6, errors
    """
    ours_kwargs, ref_kwargs = _both_arguments(
        factory, reference, hyperparams, dtype, round_hyperparams
    )
    ours, ref = _built(factory, ours_kwargs), _built(factory, ref_kwargs, reference)
    params = example_params(dtype)
    ref_state = ref.init(params)
    our_state: Any = ours.init(params)
    slots = _slot_names(our_state, params)
    fields = _match_slots(ref_state, params, slots, slot_names or {})

    names = _update_arg_names(factory, update_args)

    # Each implementation's update is its own compiled program, as in a
    # training loop: compiled together, XLA may share or reorder their common
    # terms, which moves last bits where a formula cancels (MoMo's bound).
    # The loop is host-side and asynchronous; the errors are taken at the end.
    # Functions of the parameters (value_fn, obj_fn, logits_fn) are part of
    # each program, not inputs.
    loss_fns = loss_functions(names, example_loss)
    our_update = jax.jit(functools.partial(ours.update, **loss_fns))
    ref_update = jax.jit(functools.partial(ref.update, **loss_fns))
    apply = jax.jit(optax.apply_updates)
    ours_out: list[Any] = []
    theirs: list[Any] = []
    ref_slots = _reference_slots(ref_state, params, fields, our_state)
    for step in range(steps):
        grads, extra = _array_inputs(params, names)
        forced = our_state._replace(count=jnp.asarray(step, jnp.int32), **ref_slots)
        updates, new_state = our_update(grads, forced, params, **extra)
        expected, ref_state = ref_update(grads, ref_state, params, **extra)
        ref_slots = _reference_slots(ref_state, params, fields, our_state)  # next
        # Fields that are not slots (a random rule's key) carry on as ours.
        our_state = new_state
        ours_out.append(
            {"updates": updates} | {s: getattr(new_state, s) for s in slots}
        )
        theirs.append({"updates": expected} | ref_slots)
        params = apply(params, expected)
    ours_out, theirs = jax.device_get((ours_out, theirs))
    worst = {"updates": 0.0} | dict.fromkeys(slots, 0.0)
    for at_step in zip(ours_out, theirs, strict=True):
        for name in worst:
            worst[name] = max(worst[name], relative_error(*(x[name] for x in at_step)))
    return worst


@functools.partial(jax.jit, static_argnums=1)
def _array_inputs(params: Any, names: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    arrays = tuple(n for n in names if n not in FUNCTIONS)
    return example_grads(params), compute_update_args(arrays, example_loss, params)


def _update_arg_names(
    factory: Factory, update_args: tuple[str, ...] | None
) -> tuple[str, ...]:
    if update_args is None:
        update_args = declared_update_args(factory)
    return check_known(update_args)


def free_run(
    tx: optax.GradientTransformation,
    dtype: Any,
    steps: int = 100,
    update_args: tuple[str, ...] = (),
) -> Any:
    """The parameters after ``steps`` steps on the example loss, one compiled scan.

    ``update_args`` (``"value"``, ``"value_fn"``, ``"grad"``) are computed
    from the example loss at the parameters and passed to ``update``.
    """
    params = example_params(dtype)
    state = tx.init(params)
    names = check_known(update_args)

    def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
        params, state = carry
        extra = compute_update_args(names, example_loss, params)
        updates, state = tx.update(example_grads(params), state, params, **extra)
        return (optax.apply_updates(params, updates), state), None

    # The whole run is one compiled program (a scan of the jitted step).
    @jax.jit
    def run(params: Any, state: Any) -> Any:
        (params, _), _ = jax.lax.scan(step, (params, state), length=steps)
        return params

    return run(params, state)


def free_running_error(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    steps: int = 100,
    round_hyperparams: bool = True,
    update_args: tuple[str, ...] | None = None,
) -> float:
    """Relative error of the parameters after ``steps`` free-running steps.

    Each implementation follows its own trajectory on the example loss, so in
    float32 the error mostly measures how the dynamics amplify rounding; in
    float64 it checks the formulas closely. For float64, call it inside
    ``jax.enable_x64(True)``.

    Hyperparameters are rounded to the compute dtype and shared with the
    reference as in :func:`teacher_forced_errors`, unless
    ``round_hyperparams=False``.

    Args:
        factory: the factory under test.
        reference: the independent implementation.
        hyperparams: keyword arguments for ``factory`` (see
            :func:`teacher_forced_errors`).
        dtype: dtype of the parameters and gradients.
        steps: number of steps.
        round_hyperparams: round float hyperparameters to the compute dtype.
        update_args: extra arguments of ``update`` (see
            :func:`teacher_forced_errors`).

    Returns:
        ``max |ours - theirs| / max |theirs|`` over the final parameters.

    Example::

        with jax.enable_x64(True):
            error = free_running_error(my_adam, optax.adam,
                                       {"learning_rate": 1e-3}, dtype=jnp.float64)
        assert error <= 1e-12
    """
    ours_kwargs, ref_kwargs = _both_arguments(
        factory, reference, hyperparams, dtype, round_hyperparams
    )
    names = _update_arg_names(factory, update_args)
    return relative_error(
        free_run(_built(factory, ours_kwargs), dtype, steps, names),
        free_run(_built(factory, ref_kwargs, reference), dtype, steps, names),
    )
