"""Online experiments of a :class:`~persona.serving.RecommenderService`: A/B splits and interleaving.

An :class:`Experiment` belongs to one placement (``"home"``, ``"pdp"``): every request whose
``context["placement"]`` names it is answered by the variant its user is assigned to. The
assignment is a pure function of the experiment's salt and the user id -- a keyed hash
(BLAKE2b, not Python's per-process ``hash()``) mapped to ``[0, 1)`` and cut by the split -- so a
user keeps their variant in every worker, after restarts, and when a variant's model is swapped
(:meth:`Experiment.swap`). The variant is written with each impression (``variant`` and
``experiment`` columns), which is the exposure log the analysis reads
(:func:`persona.analytics.analyze_experiment`).

With ``interleave=True`` the two variants are not split between users: every request gets one
list merged from both rankings by team drafting (:func:`team_draft`), each item labelled with the
ranker that contributed it (``teams`` on the answer and in the impression); clicks credit the
teams (:func:`persona.analytics.interleaving_result`). It needs far fewer users than an A/B
split to tell two rankers apart, but says only which one users prefer, not by how much a
business metric moves.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import ParameterError

if TYPE_CHECKING:
    from ..models.base import Recommender
    from ..store import EventStore
    from .service import RecommenderService

__all__ = ["Experiment", "assign_bucket", "team_draft"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def check_label(value, what: str) -> str:
    """A placement, variant or experiment name: 1-64 letters, digits and ``_ . : -``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = f"{value[:40]!r}" if isinstance(value, str) else type(value).__name__
        raise ParameterError(f"{what} expected a name of 1 to 64 letters, digits and _ . : - (such as 'home'), "
                             f"got {shown}")
    return value


def assign_bucket(salt: str, user_key: str) -> float:
    """The user's point in ``[0, 1)`` for the experiment salted ``salt``: stable across processes.

    >>> assign_bucket("exp-1", "42") == assign_bucket("exp-1", "42")
    True
    >>> 0.0 <= assign_bucket("exp-1", "42") < 1.0
    True
    """
    text = f"{len(salt)}:{salt}:{user_key}"  # the length keeps ("a:b", "c") and ("a", "b:c") apart
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def team_draft(first: Sequence, second: Sequence, n: int, rng: random.Random,
               names: tuple[str, str] = ("A", "B")) -> tuple[list, list]:
    """Merge two rankings by team-draft interleaving (Radlinski, Kurup and Joachims, 2008).

    The team with fewer picks so far (a coin flip on a tie) adds its best item not yet taken,
    until ``n`` items are taken or both lists are used up. Returns the merged items and, for
    each, the team (a name from ``names``) that picked it.

    >>> team_draft(["a", "b", "c"], ["b", "d", "a"], 4, random.Random(0))
    (['b', 'a', 'd', 'c'], ['B', 'A', 'B', 'A'])
    """
    out: list = []
    teams: list = []
    taken: set = set()
    i = j = picks_a = picks_b = 0
    while len(out) < n:
        while i < len(first) and first[i] in taken:
            i += 1
        while j < len(second) and second[j] in taken:
            j += 1
        left_a, left_b = i < len(first), j < len(second)
        if not (left_a or left_b):
            break
        take_a = left_a and (not left_b or picks_a < picks_b or (picks_a == picks_b and rng.random() < 0.5))
        if take_a:
            item, team = first[i], names[0]
            picks_a += 1
        else:
            item, team = second[j], names[1]
            picks_b += 1
        taken.add(item)
        out.append(item)
        teams.append(team)
    return out, teams


class Experiment:
    """One placement's experiment: its variants' models, the split, the salt (see the module doc).

    Made by :meth:`RecommenderService.experiment`; not constructed directly.

    Attributes
    ----------
    name : str
        Written with each impression (``experiment`` column); default: the salt.
    placement : str
        The ``context["placement"]`` whose requests it answers.
    variants : tuple of str
        The variant names, in the order of ``split``.
    split : tuple of float
        Each variant's share of users (sums to 1).
    salt : str
        The assignment's key: a new salt reshuffles every user, the same salt keeps them.
    interleave : bool
        Team-draft interleaving of two rankers instead of a split.
    """

    def __init__(self, service: RecommenderService, placement: str, variants: Mapping[str, Recommender],
                 split: Sequence[float] | None, salt: str, name: str | None, interleave: bool,
                 seed: int | None) -> None:
        self._service = service
        self.placement = check_label(placement, "placement")
        if not isinstance(variants, Mapping) or len(variants) < 2:
            raise ParameterError(f"variants expected a dict of at least two names -> models such as "
                                 f"{{'A': model_a, 'B': model_b}}, got {type(variants).__name__} "
                                 f"of {len(variants) if hasattr(variants, '__len__') else '?'}")
        self.variants = tuple(check_label(v, "variant name") for v in variants)
        if not isinstance(salt, str) or not salt or len(salt) > 256:
            raise ParameterError(f"salt expected a non-empty string of at most 256 characters (the experiment's "
                                 f"key, e.g. 'exp-1'), got {salt!r:.60}")
        self.salt = salt
        self.name = check_label(name if name is not None else salt, "experiment name (name=, default the salt)")
        self.interleave = bool(interleave)
        if self.interleave and len(self.variants) != 2:
            raise ParameterError(f"interleaving compares two rankers; got {len(self.variants)} variants")
        self.split = self._check_split(split)
        self._edges = np.cumsum(self.split)[:-1].tolist()
        self._seed = seed
        self._rng = random.Random(seed)
        self._snapshots = {v: service._make_snapshot(m) for v, m in variants.items()}
        self.active = True

    def _check_split(self, split) -> tuple:
        k = len(self.variants)
        if split is None:
            return tuple([1.0 / k] * k)
        try:
            shares = [float(x) for x in split]
        except (TypeError, ValueError):
            raise ParameterError(f"split expected one share per variant such as (0.5, 0.5), got {split!r:.80}") from None
        if len(shares) != k or not all(np.isfinite(shares)) or min(shares) <= 0:
            raise ParameterError(f"split expected {k} positive shares (one per variant, in the order of variants), "
                                 f"got {split!r:.80}")
        total = sum(shares)
        if abs(total - 1.0) > 1e-6:
            raise ParameterError(f"split expected shares summing to 1, got {split!r:.80} (sum {total:g})")
        return tuple(s / total for s in shares)

    # ---------------------------------------------------------------------------------- serving
    def assign(self, user: Any) -> str:
        """The variant of ``user`` (any form of the id: ``7`` and ``"7"`` are one user)."""
        from .service import _user_key

        point = assign_bucket(self.salt, _user_key(user))
        for name, edge in zip(self.variants, self._edges):
            if point < edge:
                return name
        return self.variants[-1]

    def snapshot(self, variant: str) -> Any:
        return self._snapshots[variant]

    def snapshots(self) -> Any:
        return self._snapshots.values()

    def _reseed(self) -> None:
        if self._seed is None:
            self._rng = random.Random()

    def draft(self, first: Sequence, second: Sequence, n: int) -> tuple[list, list]:
        return team_draft(first, second, n, self._rng, self.variants)  # type: ignore[arg-type]

    def swap(self, variant: str, model: Recommender) -> int:
        """Serve ``model`` for ``variant`` from now on, atomically; every user keeps their variant.

        Returns the new model version (the service's counter)."""
        if variant not in self._snapshots:
            raise ParameterError(f"no variant {variant!r} in experiment {self.name!r}; its variants are "
                                 f"{list(self.variants)}")
        return self._service._swap_variant(self, variant, model)

    def models(self) -> dict[str, Recommender]:
        """The model serving each variant now."""
        return {v: s.model for v, s in self._snapshots.items()}

    def stop(self) -> None:
        """End the experiment: the placement's requests go back to the service's model."""
        self._service.end_experiment(self.placement)

    def analyze(self, store: EventStore | None = None, **options: Any) -> Any:
        """:func:`persona.analytics.analyze_experiment` (or, interleaved,
        :func:`persona.analytics.interleaving_result`) over ``store`` (default: the service's)."""
        from .. import analytics

        store = store if store is not None else self._service.store
        if store is None:
            raise ParameterError("analyze needs the event store the impressions were logged to; pass store=")
        if self.interleave:
            return analytics.interleaving_result(store, self.name, **options)
        options.setdefault("split", dict(zip(self.variants, self.split)))
        options.setdefault("control", self.variants[0])
        return analytics.analyze_experiment(store, self.name, **options)

    def __repr__(self) -> str:
        kind = "interleaved" if self.interleave else "split " + "/".join(f"{s:g}" for s in self.split)
        return (f"Experiment({self.name!r} on {self.placement!r}: {', '.join(self.variants)}, {kind}"
                f"{'' if self.active else ', stopped'})")
