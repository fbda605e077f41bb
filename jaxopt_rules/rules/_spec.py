"""A catalog entry: a rule, what the kit runs it with, what it is verified against."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax

from jaxopt_rules._core import CatalogSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthorsReference:
    """The authors' implementation (PyTorch, from PyPI) a rule is checked against.

    Attributes:
        requirement: what to install, pinned (``"schedulefree==1.4.1"``).
        optimizer: the ``torch.optim.Optimizer`` class, as a dotted path
            (``"schedulefree.AdamWScheduleFree"``).
        cases: pairs ``(ours, theirs)``: this rule's keyword arguments and the
            reference's for the same algorithm; ``tests/make_authors_fixtures.py``
            stores the reference's trajectories.
        tolerance: relative tolerance of the final parameters after 100
            steps, per dtype.
        matrices_only: the reference takes matrices only (Keller Jordan's
            Muon): the comparison problem's leaves are all 2-d.
        framework: ``"torch"`` (``optimizer`` is a ``torch.optim.Optimizer``
            class) or ``"jax"`` (``optimizer`` is a factory of an optax
            transform, the authors' JAX package, run like the rule).
        probe_batch: the reference estimates the Hessian from a second
            gradient handed to its ``update_hessian()`` (Sophia-G: in the
            authors' loop, the gradient at labels sampled from the model),
            and its ``step(bs=...)`` takes the batch size. The comparison
            hands both sides the problem's probe gradient ``p``
            (``tests/torch_problem.py``): the reference gets ``p`` before
            ``update_hessian()`` after every ``update_interval``-th step and
            ``bs=probe_batch``; the rule gets a ``hessian_diagonal_fn``
            returning ``probe_batch * p**2``.
        shares_draws: the reference draws random numbers the rule draws too
            (kron-torch's probes and balance coin); the comparison hands it
            the rule's draws, with the rule's default seed
            (``tests/torch_problem.py`` says how, per reference).
        dtype_args: the reference's arguments set to the run's dtype
            (kron-torch keeps its factors in float32 unless told).
    """

    requirement: str
    optimizer: str
    cases: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...]
    tolerance: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"float64": 1e-10, "float32": 1e-5}
    )
    matrices_only: bool = False
    framework: str = "torch"
    probe_batch: int | None = None
    shares_draws: bool = False
    dtype_args: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        """The distribution the reference is in (``"schedulefree"``)."""
        return self.requirement.partition("==")[0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleSpec(CatalogSpec):
    """A catalog rule, with what it is tested with and verified against.

    Attributes:
        name: the public name (``jaxopt_rules.<name>``).
        factory: the public factory.
        hyperparams: hyperparameters for the conformance kit; they make the rule
            converge on the parabola and Rosenbrock problems in 10,000 steps.
        reference: the optax implementation the rule is a drop-in for, in
            words (``"optax.adam"``); empty for a rule optax does not have.
        reference_factory: that implementation, called with the same keyword
            arguments as ``factory`` (``None`` with no optax counterpart).
        reference_cases: hyperparameter sets (covering every option) on which
            trajectories are compared with the reference.
        authors: the authors' own implementation, where it is not the
            reference above (``None``: none to compare with). A rule needs a
            reference, the authors' code, or both.
        more_authors: further implementations by the authors the rule is
            verified against the same way (PSGD Kron: kron-torch beside
            psgd-jax).
    """

    reference: str = ""
    reference_factory: Callable[..., optax.GradientTransformation] | None = None
    reference_cases: tuple[Mapping[str, Any], ...] = ()
    authors: AuthorsReference | None = None
    more_authors: tuple[AuthorsReference, ...] = ()

    def __post_init__(self) -> None:
        if self.reference_factory is None and self.authors is None:
            raise ValueError(f"{self.name}: a rule needs a reference or authors=")
        if self.more_authors and self.authors is None:
            raise ValueError(f"{self.name}: more_authors= needs authors=")
        if (self.reference_factory is None) != (not self.reference_cases) or (
            self.reference_factory is None
        ) != (not self.reference):
            raise ValueError(
                f"{self.name}: reference, reference_factory and reference_cases "
                "go together"
            )

    @property
    def is_drop_in(self) -> bool:
        """Whether the rule is a drop-in for an optax function (``reference``)."""
        return self.reference_factory is not None

    @property
    def cases(self) -> tuple[Mapping[str, Any], ...]:
        """The option sets the rule is checked with.

        The reference's, then the authors' (this rule's side of each pair).
        """
        authors = [c for _, a in self.authors_references for c in a.cases]
        return (*self.reference_cases, *(ours for ours, _ in authors))

    @property
    def authors_references(self) -> tuple[tuple[str, AuthorsReference], ...]:
        """Every authors' code the rule is compared with, each with its label.

        ``authors`` labelled by the rule's name, then each of
        ``more_authors`` by ``<name>@<package>`` (``psgd_kron@kron-torch``).
        """
        if self.authors is None:
            return ()
        return (
            (self.name, self.authors),
            *((f"{self.name}@{a.package}", a) for a in self.more_authors),
        )


WEIGHT_DECAY_MASK = {
    "dense": {"w": True, "b": False},
    "conv": True,
    "scale": False,
    "frozen": None,
}
"""A weight-decay mask for the kit's example parameters (a leaf left out, a
subtree masked whole, a ``None`` leaf), used by the reference cases."""
