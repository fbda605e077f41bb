"""Running the conformance checks: one check, or all of them with a report."""

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optax

from jaxopt_rules.testing._checks import CHECKS
from jaxopt_rules.testing._compare import ConformanceError, fail
from jaxopt_rules.testing._subject import CheckSkipped, RuleUnderTest
from jaxopt_rules.testing._update_args import check_known, declared_update_args


@dataclasses.dataclass(frozen=True)
class KitReport:
    """What :func:`check_rule` did: the checks that ran and those that did not.

    Iterating, ``len`` and ``in`` see the names of the checks that ran, so the
    report reads like the list of passed checks. ``str(report)`` is a short
    summary that names every check not run, why, and how to make it run.

    Attributes:
        ran: the checks that ran and passed, in order.
        skipped: ``{check: reason}`` for each check that did not run: asked for
            with ``skip=``, or not applicable here (the reason says how to make
            it apply).
    """

    ran: tuple[str, ...]
    skipped: Mapping[str, str]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ran)

    def __len__(self) -> int:
        return len(self.ran)

    def __contains__(self, name: object) -> bool:
        return name in self.ran

    def __str__(self) -> str:
        lines = [f"{len(self.ran)} of {len(CHECKS)} conformance checks passed"]
        if self.skipped:
            lines[0] += f"; {len(self.skipped)} not run:"
            lines += [f"  {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _subject(
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None,
    static_args: tuple[str, ...] | None,
    steps: int,
    matrices_only: bool,
    update_args: tuple[str, ...] | None,
    schedule_arg: str | None,
) -> RuleUnderTest:
    if static_args is None:
        static_args = tuple(getattr(factory, "static_args", ()))
    if update_args is None:
        update_args = declared_update_args(factory)
    return RuleUnderTest(
        factory,
        dict(hyperparams or {}),
        static_args,
        steps,
        matrices_only,
        check_known(update_args),
        schedule_arg,
    )


def _run(name: str, rule: RuleUnderTest) -> str | None:
    """Runs check ``name``: None if it ran, the reason if it does not apply."""
    try:
        CHECKS[name](rule)
    except CheckSkipped as skipped:
        return str(skipped)
    except ConformanceError:
        raise
    except Exception as error:
        raise fail(name, f"raised {type(error).__name__}: {error}") from error
    return None


def run_check(
    name: str,
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None = None,
    *,
    static_args: tuple[str, ...] | None = None,
    steps: int = 10_000,
    matrices_only: bool = False,
    update_args: tuple[str, ...] | None = None,
    schedule_arg: str | None = None,
) -> bool:
    """Runs one check; raises :class:`ConformanceError` if the rule fails it.

    Args:
        name: a key of :data:`CHECKS`.
        factory: the rule factory (any callable returning an optax transform).
        hyperparams: keyword arguments for the factory.
        static_args: for ``optax.inject_hyperparams`` (default: the factory's
            ``static_args`` attribute).
        steps: steps allowed in the convergence checks.
        matrices_only: the rule takes 2-d leaves only; every problem then has
            matrix leaves (same tree structure and names).
        update_args: extra arguments of ``update`` the rule needs, which the
            kit computes from each problem's loss at the parameters:
            ``"value"`` (the loss), ``"value_fn"`` (the loss function),
            ``"grad"`` (its gradient). Default: those the factory's rule
            declares with ``rule(extra_args=...)``.
        schedule_arg: the hyperparameter the schedule checks replace by a
            schedule (default: ``learning_rate``, or torch's ``lr``).

    Returns:
        True if the check ran, False if it does not apply here (for instance
        the sharding check with a single device; :func:`check_rule`'s report
        says why).

    Example:
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> testing.run_check("chain", jr.sgd, {"learning_rate": 1e-3})
        True
    """
    if name not in CHECKS:
        raise KeyError(f"unknown check {name!r}; the checks are {sorted(CHECKS)}")
    rule = _subject(
        factory,
        hyperparams,
        static_args,
        steps,
        matrices_only,
        update_args,
        schedule_arg,
    )
    return _run(name, rule) is None


def check_rule(
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None = None,
    *,
    static_args: tuple[str, ...] | None = None,
    steps: int = 10_000,
    skip: tuple[str, ...] = (),
    matrices_only: bool = False,
    update_args: tuple[str, ...] | None = None,
    schedule_arg: str | None = None,
    verbose: bool = True,
) -> KitReport:
    """Runs every conformance check on a rule (21 of them); one call from a test.

    The checks share compiled programs (the rule's jitted step on the example
    tree and its first steps), so one call costs far less than the 21 checks
    run one by one with :func:`run_check`.

    Args:
        factory: the rule factory (any callable returning an optax transform).
        hyperparams: keyword arguments for the factory; they must make the rule
            converge on the parabola and Rosenbrock problems in ``steps`` steps.
        static_args: for ``optax.inject_hyperparams`` (default: the factory's
            ``static_args`` attribute).
        steps: steps allowed in the convergence checks.
        skip: names of checks not to run.
        matrices_only: the rule takes 2-d leaves only (see :func:`run_check`).
        update_args: extra arguments of ``update`` the kit computes from each
            problem's loss (see :func:`run_check`).
        schedule_arg: the hyperparameter the schedule checks drive (see
            :func:`run_check`).
        verbose: print the report's lines on checks that could not run (such as
            the sharding check in a process with one device) to stderr.

    Returns:
        A :class:`KitReport`: the checks that ran (iterate it, or ``len``) and
        those that did not, with the reason and how to make each run.

    Raises:
        ConformanceError: listing every failed check, each with the leaf path.

    Example:
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> report = testing.check_rule(
        ...     jr.sgd, {"learning_rate": 1e-3, "momentum": 0.9}, skip=("sharding",)
        ... )
        >>> "inject_hyperparams" in report, len(report)
        (True, 20)
        >>> print(report)
        20 of 21 conformance checks passed; 1 not run:
          sharding: skipped as asked (skip=)
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise KeyError(
            f"unknown checks in skip: {unknown}; the checks are {sorted(CHECKS)}"
        )
    rule = _subject(
        factory,
        hyperparams,
        static_args,
        steps,
        matrices_only,
        update_args,
        schedule_arg,
    )
    failures: list[str] = []
    ran: list[str] = []
    skipped: dict[str, str] = {}
    for name in CHECKS:
        if name in skip:
            skipped[name] = "skipped as asked (skip=)"
            continue
        try:
            reason = _run(name, rule)
        except ConformanceError as error:
            failures.append(str(error))
            continue
        if reason is None:
            ran.append(name)
        else:
            skipped[name] = reason
    if failures:
        raise ConformanceError(
            f"{len(failures)} conformance check(s) failed:\n" + "\n".join(failures)
        )
    report = KitReport(tuple(ran), skipped)
    not_applicable = {k: v for k, v in skipped.items() if k not in skip}
    if verbose and not_applicable:
        for name, why in not_applicable.items():
            sys.stderr.write(f"jaxopt_rules.testing: check {name!r} not run: {why}\n")
    return report
