"""Off-policy evaluation of ranked lists (slates): what a candidate ranker's click-through rate would
be, estimated from the impressions another ranker logged with randomised lists.

The logs (:class:`LoggedSlates`) hold, per round (one shown list), the items at positions
``1..K_i``, the clicks on them, and the logging policy's **propensity** of each shown item at its
position, ``mu_i(s_ik at k)`` -- the marginal probability that
``RecommenderService(explore=...)`` logs (:mod:`persona.serving.explore`). The target is a
candidate ranker's list for each round (deterministic), or a randomised ranker given by its
marginals ``pi_i(a at k)``. The value estimated is the target's expected clicks per shown slot
(the CTR of ``ps.analytics.online_metrics``) over the logged rounds' contexts, on the positions
the logs observed.

Notation: ``c_ik`` the click at position ``k``, ``r_i = sum_k c_ik``, ``w_ik = pi_i(s_ik at k) /
mu_i(s_ik at k)``, ``q(i, a, k)`` a reward model's click probability of item ``a`` at position
``k`` in round ``i``, ``dm_ik = sum_a pi_i(a at k) q(i, a, k)``; each per-round term is divided by
``K``, the logs' number of positions.

================  ==========================================================  =========================
method            per-round term (times K)                                    unbiased when
================  ==========================================================  =========================
``dm``            ``sum_k dm_ik``                                             the reward model is right
``ips-position``  ``sum_k w_ik c_ik``                                         a click depends only on
                                                                              the item and its position
                                                                              (position-based model)
``dr-position``   ``sum_k dm_ik + w_ik (c_ik - q(i, s_ik, k))``               as ips-position, or the
                                                                              model is right
``pi``            ``r_i * q_pi^T Gamma^+ 1_{s_i}``                            the list's clicks add up
                                                                              over positions (additive)
``dr-pi``         ``sum_k dm_ik + (r_i - sum_k q(i, s_ik, k)) q_pi^T          as pi, or the model is
                  Gamma^+ 1_{s_i}``                                           right
``ips-slate``     ``r_i [s_i = target_i] / mu_i(s_i)``                       always (exact lists
                                                                              only: huge variance)
================  ==========================================================  =========================

``pi`` is the pseudoinverse estimator of Swaminathan et al. (2017, "Off-policy evaluation for
slate recommendation"): ``1_s`` is the indicator vector of (position, candidate) pairs of a list,
``Gamma = E_mu[1_s 1_s^T]`` the logging policy's pairwise probabilities over its candidates
(``policy.second_moments``, closed form for :class:`~persona.serving.EpsilonGreedy`) and ``q_pi``
the target's marginals in the same coordinates. It needs the logging candidates of each round
(``candidates=``) and uses only the list's total clicks, so it also holds when a click's
probability depends on the whole list, as long as the contributions add up. ``ips-position`` (the
"independent" or item-position estimator of Li et al., 2018) needs only what the store logs, and
is unbiased under the position-based click model ``P(click) = examination(k) x attraction(item)``.

Every estimator is a mean of per-round terms, so the interval is the normal one,
``value +- z sd(terms) / sqrt(n)`` (or a bootstrap over rounds), clipped to ``[0, 1]`` for 0/1
clicks like :func:`persona.ope.estimate`'s. The target's mass outside the logging candidates
(items the logging policy could never show there) cannot be estimated by any of them: ``support``
reports the share that was inside (when the candidates are known); ``mean_weight`` (about the
supported share for the position-based weights) tells the same from the logs alone.

>>> import numpy as np, persona as ps
>>> logs = ps.ope.LoggedSlates(items=[["a", "b"], ["b", "a"]], clicks=[[1, 0], [0, 0]],
...                            propensities=[[0.5, 0.5], [0.5, 0.5]])
>>> est = ps.ope.estimate_slates(logs, [["a", "b"], ["a", "b"]], "ips-position")
>>> est.value          # a is clicked at position 1 when shown there; the target always shows it there
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, NotFittedError, ParameterError
from ..typing import ArrayLike
from .estimators import MAX_BOOTSTRAP, Estimate, _check_reward_range, _resolve_range

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LoggedSlates", "SlateEstimate", "PositionBasedModel", "estimate_slates", "compare_slates",
           "SLATE_METHODS"]

#: The slate estimators, in the order :func:`compare_slates` runs them.
SLATE_METHODS = ("dm", "ips-position", "dr-position", "pi", "dr-pi", "ips-slate")
_NEEDS_MODEL = {"dm", "dr-position", "dr-pi"}
_NEEDS_GAMMA = {"pi", "dr-pi"}
_BOOTSTRAP_CHUNK = 64


@dataclass(frozen=True, repr=False)
class SlateEstimate(Estimate):
    """An :class:`~persona.ope.Estimate` of a slate estimator, with two more diagnostics.

    Attributes
    ----------
    support : float
        The share of the target's (position, item) mass on items among the logging candidates of
        the round (NaN when the candidates are not known): mass outside cannot be estimated.
    n_positions : int
        ``K``, the positions of the logs; the value is expected clicks per list / ``K``.
    """

    support: float = math.nan
    n_positions: int = 0

    def __repr__(self) -> str:
        return (f"SlateEstimate({self.method}: {self.value:.6g} [{self.ci_low:.6g}, {self.ci_high:.6g}], "
                f"{self.ci} {100 * (1 - self.alpha):g}% CI, n={self.n_rounds}, ess={self.ess:.1f}, "
                f"max_weight={self.max_weight:.4g}, support={self.support:.3g})")


# --------------------------------------------------------------------------------------------- the logs
def _ids2d(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (one row per logged list, one column per position), got "
                        f"shape {arr.shape}")
    return arr


def _floats2d(x, name: str, shape) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: expected numbers, one per shown item") from None
    if arr.shape != shape:
        raise DataError(f"{name} has shape {arr.shape} but items has {shape}; give one value per shown item")
    return arr


class LoggedSlates:
    """Logged lists: items, clicks and the logging policy's propensity of each item at its position.

    Parameters
    ----------
    items : 2-D array of ids (n_rounds, K)
        The shown items, position 1 first; entries past a round's ``n_shown`` are ignored.
    clicks : 2-D array of float (n_rounds, K)
        The reward of each shown item (0/1 clicks; any finite value).
    propensities : 2-D array of float (n_rounds, K)
        The logging policy's probability of each shown item at its position, in ``(0, 1]``.
    n_shown : int array (n_rounds,), optional
        The length of each list (default ``K``).
    users : array (n_rounds,), optional
        Who saw each list (for reward models that use it; :meth:`from_impressions` fills it).
    candidates : 2-D array of ids (n_rounds, m), optional
        The logging policy's candidates of each round, in the order it ranked them (what
        ``explore`` drew from: the model's ``top`` best); needed by ``pi`` and ``dr-pi`` and by the
        ``support`` diagnostic.
    n_candidates : int array (n_rounds,), optional
        How many of each row of ``candidates`` are real (default all).
    policy : object, optional
        The logging policy, with ``second_moments(m, n)`` (:class:`~persona.serving.EpsilonGreedy`);
        needed by ``pi`` and ``dr-pi``.
    slate_propensities : float array (n_rounds,), optional
        The logging probability of each whole list (``policy.slate_probability``); needed by
        ``ips-slate``.
    request_ids : array (n_rounds,), optional

    Raises
    ------
    DataError
        Shapes that disagree, a propensity outside ``(0, 1]`` or a non-finite click on a shown
        position, ``n_shown`` outside ``[1, K]``.
    """

    def __init__(self, items: ArrayLike, clicks: ArrayLike, propensities: ArrayLike, *, n_shown: ArrayLike | None = None,
                 users: ArrayLike | None = None, candidates: ArrayLike | None = None,
                 n_candidates: ArrayLike | None = None, policy: Any = None,
                 slate_propensities: ArrayLike | None = None, request_ids: ArrayLike | None = None) -> None:
        items = _ids2d(items, "items")
        n, k = items.shape
        if n == 0 or k == 0:
            raise DataError(f"LoggedSlates needs at least one list of at least one item, got shape {items.shape}")
        clicks = _floats2d(clicks, "clicks", items.shape)
        propensities = _floats2d(propensities, "propensities", items.shape)
        if n_shown is None:
            n_shown = np.full(n, k, dtype=np.int64)
        else:
            n_shown = _counts(n_shown, "n_shown", n, k)
        shown = np.arange(k)[None, :] < n_shown[:, None]
        bad = shown & ~(np.isfinite(propensities) & (propensities > 0) & (propensities <= 1))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"propensities must lie in (0, 1] on every shown position, got {propensities[r, c]!r} "
                            f"at round {int(r)}, position {int(c) + 1} ({int(bad.sum())} such); log the policy's "
                            f"probability of each shown item (RecommenderService(explore=...) does)")
        bad = shown & ~np.isfinite(clicks)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"clicks must be finite on every shown position, got {clicks[r, c]!r} at round {int(r)}")
        self.items = items
        self.clicks, self.propensities = np.where(shown, clicks, 0.0), np.where(shown, propensities, 1.0)
        self.n_shown, self.shown = n_shown, shown
        self.users = None if users is None else _vector(users, "users", n)
        self.request_ids = None if request_ids is None else _vector(request_ids, "request_ids", n)
        if candidates is not None:
            candidates = _ids2d(candidates, "candidates")
            if candidates.shape[0] != n:
                raise DataError(f"candidates has {candidates.shape[0]} rows for {n} logged lists; give one per list")
            m = candidates.shape[1]
            n_candidates = np.full(n, m, dtype=np.int64) if n_candidates is None else _counts(
                n_candidates, "n_candidates", n, m)
            if (n_candidates < n_shown).any():
                r = int(np.flatnonzero(n_candidates < n_shown)[0])
                raise DataError(f"round {r} shows {int(n_shown[r])} items but has {int(n_candidates[r])} candidates; "
                                f"the shown items are drawn from the candidates")
        elif n_candidates is not None:
            raise DataError("n_candidates given without candidates")
        self.candidates, self.n_candidates = candidates, n_candidates
        if policy is not None and not callable(getattr(policy, "second_moments", None)):
            raise ParameterError(f"policy: expected the logging policy (persona.serving.EpsilonGreedy: it has "
                                 f"second_moments(m, n)), got {type(policy).__name__}")
        self.policy = policy
        if slate_propensities is not None:
            sp = np.asarray(slate_propensities, dtype=np.float64)
            if sp.shape != (n,) or not (np.isfinite(sp) & (sp > 0) & (sp <= 1)).all():
                raise DataError(f"slate_propensities: expected {n} probabilities in (0, 1], one per list")
            slate_propensities = sp
        self.slate_propensities = slate_propensities

    @property
    def n_rounds(self) -> int:
        return int(self.items.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return self.n_rounds

    def __repr__(self) -> str:
        clicks = float(self.clicks[self.shown].sum())
        extra = "" if self.candidates is None else f", {self.candidates.shape[1]} candidates"
        return (f"LoggedSlates({self.n_rounds} lists x {self.n_positions} positions, {clicks:g} clicks, "
                f"CTR {clicks / max(1, int(self.shown.sum())):.4g}{extra})")

    def subset(self, rows: ArrayLike) -> "LoggedSlates":
        """The logs of ``rows`` (an index array or a boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        take = (lambda a: None if a is None else a[rows])
        return LoggedSlates(self.items[rows], self.clicks[rows], self.propensities[rows], n_shown=self.n_shown[rows],
                            users=take(self.users), candidates=take(self.candidates),
                            n_candidates=take(self.n_candidates), policy=self.policy,
                            slate_propensities=take(self.slate_propensities), request_ids=take(self.request_ids))

    @classmethod
    def from_impressions(cls, impressions: pd.DataFrame, outcomes: pd.DataFrame | None, *, reward: str = "click",
                         missing_propensity: float | None = None, **options: Any) -> "LoggedSlates":
        """The logs from ``store.impressions()`` and the outcomes ``ps.analytics.attribution`` found.

        Parameters
        ----------
        impressions : pandas.DataFrame
            One row per shown item (``request_id``, ``user``, ``item``, ``position``, ``propensity``),
            as :meth:`EventStore.impressions` returns; select the placement there.
        outcomes : pandas.DataFrame or None
            ``ps.analytics.attribution(store)``: the rows with ``status == "attributed"`` and
            ``kind == reward`` are the clicks (counted once per shown item). None: no clicks.
        reward : {"click", "cart", "purchase"}
        missing_propensity : float, optional
            The propensity of items logged without one (answers not randomised). Default: such
            items are an error; ``1.0`` says those lists were the logging model's deterministic
            answers (exact when nothing else was shown there).
        **options
            ``candidates``, ``n_candidates``, ``policy``, ``slate_propensities`` (one per list, in the
            order of first appearance of the request ids).
        """
        import pandas as pd

        if not isinstance(impressions, pd.DataFrame):
            raise DataError(f"impressions: expected a pandas DataFrame as store.impressions() gives, got "
                            f"{type(impressions).__name__}")
        missing = sorted({"request_id", "item", "position", "propensity"} - set(impressions.columns))
        if missing:
            raise DataError(f"impressions: no column {missing}; expected the columns of store.impressions()")
        if not len(impressions):
            raise DataError("impressions is empty: nothing was logged (check the placement, and that the service "
                            "has a store)")
        rid, rids = pd.factorize(impressions["request_id"], sort=False)
        pos = pd.to_numeric(impressions["position"], errors="coerce").to_numpy()
        if not (np.isfinite(pos).all() and (pos >= 1).all() and (pos == np.round(pos)).all()):
            raise DataError("impressions: position must be an integer >= 1 on every row")
        pos = pos.astype(np.int64) - 1
        n, k = len(rids), int(pos.max()) + 1
        n_shown = np.bincount(rid, minlength=n)
        filled = np.zeros((n, k), dtype=bool)
        filled[rid, pos] = True
        if (filled.sum(axis=1) != n_shown).any() or (filled.argmin(axis=1)[n_shown < k] != n_shown[n_shown < k]).any():
            raise DataError("impressions: each request must list positions 1..L once each; found gaps or repeats")
        items = np.full((n, k), None, dtype=object)
        items[rid, pos] = impressions["item"].to_numpy(dtype=object)
        prop = pd.to_numeric(impressions["propensity"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(prop).any():
            if missing_propensity is None:
                raise DataError(f"{int(np.isnan(prop).sum())} shown items have no propensity (lists that were not "
                                f"randomised); log with RecommenderService(explore=...), select the explored "
                                f"placement, or pass missing_propensity=1.0 if those were the deterministic answers "
                                f"of the logging model")
            fill = check_number(missing_propensity, "missing_propensity", min=0, max=1, min_open=True, error=DataError)
            prop = np.where(np.isnan(prop), fill, prop)
        props = np.ones((n, k))
        props[rid, pos] = prop
        clicks = np.zeros((n, k))
        if outcomes is not None and len(outcomes):
            need = sorted({"request_id", "item", "kind", "status"} - set(outcomes.columns))
            if need:
                raise DataError(f"outcomes: no column {need}; pass ps.analytics.attribution(store)")
            hit = outcomes[(outcomes["status"] == "attributed") & (outcomes["kind"] == reward)]
            if len(hit):
                where = pd.DataFrame({"request_id": impressions["request_id"].to_numpy(dtype=object),
                                      "item": impressions["item"].astype(str).to_numpy(), "row": rid, "col": pos})
                got = hit.assign(item=hit["item"].astype(str))[["request_id", "item"]].merge(
                    where, on=["request_id", "item"], how="inner")
                clicks[got["row"].to_numpy(), got["col"].to_numpy()] = 1.0
        users = None
        if "user" in impressions.columns:
            users = impressions["user"].to_numpy(dtype=object)[np.unique(rid, return_index=True)[1]]
        return cls(items, clicks, props, n_shown=n_shown, users=users, request_ids=np.asarray(rids, dtype=object),
                   **options)


def _counts(x, name: str, n: int, k: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (n,) or arr.dtype.kind not in "iu" or (len(arr) and (arr.min() < 1 or arr.max() > k)):
        raise DataError(f"{name}: expected {n} integers in [1, {k}], one per logged list")
    return arr.astype(np.int64)


def _vector(x, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
    if arr.shape != (n,):
        raise DataError(f"{name}: expected one value per logged list ({n}), got shape {arr.shape}")
    return arr


# ---------------------------------------------------------------------------------------- the target
def _target(logs: LoggedSlates, target, target_propensities) -> tuple[np.ndarray, np.ndarray | None]:
    t = _ids2d(target, "target")
    n, k = logs.n_rounds, logs.n_positions
    if t.shape[0] != n:
        raise DataError(f"target has {t.shape[0]} rows but the logs have {n} lists; give the target's list for every "
                        f"logged round")
    if target_propensities is None:
        return t, None
    try:
        marg = np.asarray(target_propensities, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("target_propensities: expected numbers") from None
    if marg.shape != (n, t.shape[1], k):
        raise DataError(f"target_propensities: expected shape (n_rounds, n_target_items, K) = ({n}, {t.shape[1]}, {k}) "
                        f"(the probability of target[i, j] at position k), got {marg.shape}")
    if not np.isfinite(marg).all() or (marg < 0).any() or (marg > 1 + 1e-12).any():
        raise DataError("target_propensities: probabilities must lie in [0, 1]")
    cols = marg.sum(axis=1)
    if (cols > 1 + 1e-9).any():
        raise DataError("target_propensities: a position's probabilities sum to more than 1 over the items")
    return t, marg


def _codes(*arrays) -> list[np.ndarray]:
    """One integer code per distinct id across ``arrays`` (None: -1)."""
    import pandas as pd

    flat = np.concatenate([np.asarray(a, dtype=object).ravel() for a in arrays])
    codes, _ = pd.factorize(flat, use_na_sentinel=True)
    out, start = [], 0
    for a in arrays:
        size = int(np.prod(a.shape))
        out.append(codes[start:start + size].reshape(a.shape).astype(np.int64))
        start += size
    return out


def _target_marginals(tcodes, marg, k):
    """``(N, J, K)`` marginals of the target (identity for a deterministic list, cut to K positions)."""
    n, j = tcodes.shape
    if marg is not None:
        return np.where(tcodes[:, :, None] >= 0, marg, 0.0)
    out = np.zeros((n, j, k))
    d = min(j, k)
    out[:, np.arange(d), np.arange(d)] = 1.0
    return np.where(tcodes[:, :, None] >= 0, out, 0.0)


# ---------------------------------------------------------------------------------------- the reward model
class PositionBasedModel:
    """The position-based click model ``P(click | item a at position k) = theta_k * alpha_a``, by EM.

    The default reward model of ``dm`` / ``dr-position`` / ``dr-pi``: an examination probability per
    position and an attraction per item (shrunk toward the mean attraction by ``prior_strength``
    pseudo-impressions), fitted by expectation-maximisation on the logged lists (Chuklin, Markov
    and de Rijke, "Click models for web search", 2015). :func:`estimate_slates` cross-fits it over
    ``n_folds`` seeded folds of the rounds, so a round's own clicks never enter its prediction. It
    knows no user: a personalised model (anything with ``predict(rows, items, positions)``) can
    take its place.

    >>> import persona as ps
    >>> logs = ps.ope.LoggedSlates(items=[["a", "b"], ["b", "a"]] * 50, clicks=[[1, 0], [0, 1]] * 50,
    ...                            propensities=[[0.5, 0.5]] * 100)
    >>> model = ps.ope.PositionBasedModel(prior_strength=0).fit(logs)
    >>> bool(model.predict(None, [["a"]], [[0]])[0, 0] > model.predict(None, [["b"]], [[0]])[0, 0])
    True
    """

    def __init__(self, *, iterations: int = 100, tol: float = 1e-6, prior_strength: float = 5.0, n_folds: int = 2,
                 random_state: int | None = 0) -> None:
        self.iterations = check_int(iterations, "iterations", min=1, max=100_000)
        self.tol = check_number(tol, "tol", min=0)
        self.prior_strength = check_number(prior_strength, "prior_strength", min=0)
        self.n_folds = check_int(n_folds, "n_folds", min=2, max=100)
        self.random_state = random_state

    def fit(self, logs: LoggedSlates) -> "PositionBasedModel":
        """Fit on every shown item of ``logs``; returns ``self``."""
        import pandas as pd

        if not isinstance(logs, LoggedSlates):
            raise DataError(f"logs: expected a persona.ope.LoggedSlates, got {type(logs).__name__}")
        shown = logs.shown
        a, ids = pd.factorize(np.asarray(logs.items[shown], dtype=object))
        k = np.nonzero(shown)[1]
        c = np.clip(logs.clicks[shown], 0.0, 1.0)
        n_pos = logs.n_positions
        n_items = len(ids)
        count_k = np.bincount(k, minlength=n_pos).astype(np.float64)
        count_a = np.bincount(a, minlength=n_items).astype(np.float64)
        mean_c = c.mean() if len(c) else 0.0
        theta = np.where(count_k > 0, np.bincount(k, c, n_pos) / np.maximum(count_k, 1), 0.0)
        theta = np.clip(theta / max(theta.max(), 1e-12), 1e-6, 1.0)
        alpha = np.clip(np.bincount(a, c, n_items) / np.maximum(count_a, 1) / max(theta.mean(), 1e-6), 1e-6, 1 - 1e-6)
        prior = float(np.clip(mean_c / max(theta.mean(), 1e-6), 1e-6, 1 - 1e-6))
        for _ in range(self.iterations):
            th, al = theta[k], alpha[a]
            denom = np.maximum(1.0 - th * al, 1e-12)
            examined = c + (1 - c) * th * (1 - al) / denom
            attracted = c + (1 - c) * al * (1 - th) / denom
            new_theta = np.clip(np.bincount(k, examined, n_pos) / np.maximum(count_k, 1), 1e-6, 1.0)
            s = self.prior_strength
            new_alpha = np.clip((np.bincount(a, attracted, n_items) + s * prior) / (count_a + s if s else
                                                                                    np.maximum(count_a, 1)),
                                1e-6, 1 - 1e-6)
            prior = float(np.clip(new_alpha[count_a > 0].mean() if n_items else prior, 1e-6, 1 - 1e-6))
            change = max(np.abs(new_theta - theta).max(initial=0.0), np.abs(new_alpha - alpha).max(initial=0.0))
            theta, alpha = new_theta, new_alpha
            if change < self.tol:
                break
        self.examination_ = theta
        self.attraction_ = alpha
        self.item_ids_ = np.asarray(ids, dtype=object)
        self.prior_ = prior
        return self

    def predict(self, rows: ArrayLike, items: ArrayLike, positions: ArrayLike) -> np.ndarray:
        """Click probabilities of ``items`` at ``positions`` (0-based), same shape; ``rows`` is unused."""
        import pandas as pd

        if not hasattr(self, "examination_"):
            raise NotFittedError("PositionBasedModel is not fitted; call fit(logs) first")
        items = np.asarray(items, dtype=object)
        positions = np.asarray(positions, dtype=np.int64)
        if items.shape != positions.shape:
            positions = np.broadcast_to(positions, items.shape)
        idx = pd.Index(self.item_ids_).get_indexer(items.ravel()).reshape(items.shape)
        alpha = np.where(idx >= 0, self.attraction_[np.maximum(idx, 0)], self.prior_)
        theta = self.examination_[np.clip(positions, 0, len(self.examination_) - 1)]
        return theta * alpha


def _predictions(logs: LoggedSlates, tgt: np.ndarray, reward_model, random_state):
    """``q_logged`` (N, K) and ``q_target`` (N, J, K): the reward model's click probabilities."""
    n, k = logs.n_rounds, logs.n_positions
    j = tgt.shape[1]
    rows = np.arange(n)
    pos_l = np.broadcast_to(np.arange(k), (n, k))
    pos_t = np.broadcast_to(np.arange(k), (n, j, k))
    items_t = np.broadcast_to(tgt[:, :, None], (n, j, k))
    if reward_model is None or isinstance(reward_model, PositionBasedModel):
        model = reward_model or PositionBasedModel(random_state=random_state)
        q_l, q_t = np.zeros((n, k)), np.zeros((n, j, k))
        folds = np.random.default_rng(model.random_state).integers(0, model.n_folds, n)
        for f in range(model.n_folds):
            test = folds == f
            train = ~test
            if not test.any():
                continue
            fitted = PositionBasedModel(iterations=model.iterations, tol=model.tol, prior_strength=model.prior_strength)
            fitted.fit(logs.subset(train if train.any() else test))
            q_l[test] = fitted.predict(rows[test], logs.items[test], pos_l[test])
            q_t[test] = fitted.predict(rows[test], items_t[test].reshape(int(test.sum()), j * k),
                                       pos_t[test].reshape(int(test.sum()), j * k)).reshape(-1, j, k)
        return q_l, q_t
    predict = getattr(reward_model, "predict", None)
    if not callable(predict):
        raise ParameterError(f"reward_model: expected None, a ps.ope.PositionBasedModel or an object with "
                             f"predict(rows, items, positions), got {type(reward_model).__name__}")
    q_l = np.asarray(predict(rows, logs.items, pos_l), dtype=np.float64)
    q_t = np.asarray(predict(rows, items_t.reshape(n, j * k), pos_t.reshape(n, j * k)), dtype=np.float64)
    if q_l.shape != (n, k) or q_t.shape != (n, j * k) or not (np.isfinite(q_l).all() and np.isfinite(q_t).all()):
        raise DataError("reward_model.predict must return finite predictions of the shape of its items argument")
    return q_l, q_t.reshape(n, j, k)


# ---------------------------------------------------------------------------------------- the weights
def _pi_weights(logs: LoggedSlates, lcodes, tcodes, marg, ccodes, cache: dict) -> np.ndarray:
    """``q_pi^T Gamma^+ 1_{s_i}`` for every round (grouped by candidates and list length)."""
    if logs.candidates is None or logs.policy is None:
        raise ParameterError("the pseudoinverse estimator needs the logging candidates of every round and the logging "
                             "policy: LoggedSlates(..., candidates=..., policy=ps.serving.EpsilonGreedy(...))")
    n = logs.n_rounds
    m_all = ccodes.shape[1]
    valid_c = np.arange(m_all)[None, :] < logs.n_candidates[:, None]
    ccodes = np.where(valid_c, ccodes, -3)
    # each shown item's rank among the round's candidates
    hit_s = (lcodes[:, :, None] == ccodes[:, None, :]) & logs.shown[:, :, None]
    found = hit_s.any(axis=2)
    if (logs.shown & ~found).any():
        r, c = np.argwhere(logs.shown & ~found)[0]
        raise DataError(f"round {int(r)} shows {logs.items[r, c]!r} at position {int(c) + 1}, which is not among its "
                        f"candidates; candidates must list what the logging policy drew from")
    rank_s = hit_s.argmax(axis=2)
    hit_t = (tcodes[:, :, None] == ccodes[:, None, :]) & (tcodes[:, :, None] >= 0)
    rank_t = np.where(hit_t.any(axis=2), hit_t.argmax(axis=2), -1)  # (N, J)
    out = np.zeros(n)
    groups = np.unique(np.stack([logs.n_candidates, logs.n_shown], axis=1), axis=0)
    for m, kk in groups.tolist():
        rows = np.flatnonzero((logs.n_candidates == m) & (logs.n_shown == kk))
        key = (m, kk)
        g = cache.get(key)
        if g is None:
            gamma = np.asarray(logs.policy.second_moments(m, kk), dtype=np.float64)
            if gamma.shape != (kk * m, kk * m):
                raise DataError(f"policy.second_moments({m}, {kk}) returned shape {gamma.shape}, expected "
                                f"{(kk * m, kk * m)}")
            g = cache[key] = np.linalg.pinv(gamma, rcond=1e-10, hermitian=True)
        q = np.zeros((len(rows), kk * m))
        rt = rank_t[rows]
        for pos in range(kk):
            mass = marg[rows, :, pos]  # (R, J)
            ok = rt >= 0
            r_idx, j_idx = np.nonzero(ok & (mass > 0))
            np.add.at(q, (r_idx, pos * m + rt[r_idx, j_idx]), mass[r_idx, j_idx])
        u = q @ g  # (R, kk m)
        cols = np.arange(kk) * m + rank_s[rows, :kk]
        out[rows] = np.take_along_axis(u, cols, axis=1).sum(axis=1)
    return out


# ---------------------------------------------------------------------------------------- estimation
def _check_method(method) -> str:
    if not isinstance(method, str) or method.lower() not in SLATE_METHODS:
        raise ParameterError(f"method must be one of {list(SLATE_METHODS)}, got {method!r}")
    return method.lower()


@dataclass
class _Parts:
    terms: dict          # method -> per-round terms
    weights: dict        # method -> the weights its diagnostics describe
    n_clipped: dict
    support: float


def _parts(logs, target, target_propensities, methods, reward_model, clip, random_state) -> _Parts:
    if not isinstance(logs, LoggedSlates):
        raise DataError(f"logs: expected a persona.ope.LoggedSlates, got {type(logs).__name__}")
    tgt, marg_given = _target(logs, target, target_propensities)
    k = logs.n_positions
    arrays = [logs.items, tgt] + ([logs.candidates] if logs.candidates is not None else [])
    codes = _codes(*arrays)
    lcodes = np.where(logs.shown, codes[0], -2)
    tcodes = codes[1]
    marg = _target_marginals(tcodes, marg_given, k)
    marg = np.where(logs.shown[:, None, :], marg, 0.0)  # positions the logs did not observe are not evaluated
    # the target's probability of each logged item at its position
    eq = (tcodes[:, :, None] == lcodes[:, None, :])
    pi_logged = np.einsum("ijk,ijk->ik", eq, marg)
    w = np.where(logs.shown, pi_logged / logs.propensities, 0.0)
    clipped = 0
    if clip is not None:
        clipped = int((w > clip).sum())
        w = np.minimum(w, clip)
    c = logs.clicks
    r = c.sum(axis=1)
    terms, weights, n_clipped = {}, {}, {}
    need = set(methods)
    q_l = q_t = dm = None
    if need & _NEEDS_MODEL:
        q_l, q_t = _predictions(logs, tgt, reward_model, random_state)
        dm = np.einsum("ijk,ijk->ik", marg, q_t)
        q_l = np.where(logs.shown, q_l, 0.0)
    omega = None
    support = math.nan
    if logs.candidates is not None:
        ccodes = np.where(np.arange(logs.candidates.shape[1])[None, :] < logs.n_candidates[:, None], codes[2], -3)
        inside = ((tcodes[:, :, None] == ccodes[:, None, :]) & (tcodes[:, :, None] >= 0)).any(axis=2)
        total = marg.sum(axis=(1, 2))
        covered = np.einsum("ijk,ij->i", marg, inside.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            support = float(np.nanmean(np.where(total > 0, covered / total, np.nan))) if (total > 0).any() else math.nan
    if need & _NEEDS_GAMMA:
        omega = _pi_weights(logs, lcodes, tcodes, marg, codes[2] if logs.candidates is not None else None, {})
    for m in methods:
        if m == "dm":
            t, wt = dm.sum(axis=1), w[logs.shown]
        elif m == "ips-position":
            t, wt = (w * c).sum(axis=1), w[logs.shown]
        elif m == "dr-position":
            t, wt = (dm + w * (c - q_l)).sum(axis=1), w[logs.shown]
        elif m == "pi":
            t, wt = r * omega, omega
        elif m == "dr-pi":
            t, wt = dm.sum(axis=1) + (r - q_l.sum(axis=1)) * omega, omega
        else:  # ips-slate
            if logs.slate_propensities is None:
                raise ParameterError("ips-slate needs the logging probability of every whole list: "
                                     "LoggedSlates(..., slate_propensities=...)")
            if marg_given is not None:
                raise ParameterError("ips-slate evaluates a deterministic target only (a list per round); pass "
                                     "target without target_propensities")
            d = min(tcodes.shape[1], k)
            same = np.all((tcodes[:, :d] == lcodes[:, :d]) | ~logs.shown[:, :d], axis=1)
            same &= (logs.n_shown <= tcodes.shape[1])
            ws = same / logs.slate_propensities
            if clip is not None:
                n_clipped[m] = int((ws > clip).sum())
                ws = np.minimum(ws, clip)
            t, wt = r * ws, ws
        terms[m] = t / k
        weights[m] = np.asarray(wt, dtype=np.float64)
        n_clipped.setdefault(m, clipped if m in ("dm", "ips-position", "dr-position") else 0)
    return _Parts(terms, weights, n_clipped, support)


def _finish(method, parts: _Parts, logs, *, alpha, ci, n_bootstrap, random_state, clip, reward_range) -> SlateEstimate:
    terms = parts.terms[method]
    n = len(terms)
    value = float(terms.mean())
    if ci == "normal":
        se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        lo, hi = value - z * se, value + z * se
    else:
        rng = np.random.default_rng(random_state)
        boot = np.empty(n_bootstrap)
        for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
            b = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
            boot[start:start + b] = terms[rng.integers(0, n, size=(b, n))].mean(axis=1)
        lo, hi = (float(x) for x in np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0]))
        se = float(boot.std(ddof=1))
    rng_ = _resolve_range(reward_range, logs.clicks[logs.shown])
    if rng_ is not None:
        value, lo, hi = (min(max(float(x), rng_[0]), rng_[1]) if x == x else x for x in (value, lo, hi))
    w = parts.weights[method]
    sw2 = float(np.dot(w, w))
    ess = float(w.sum() ** 2 / sw2) if sw2 > 0 else 0.0
    return SlateEstimate(method=method, value=float(value), ci_low=float(lo), ci_high=float(hi), std_error=float(se),
                         alpha=float(alpha), ci=ci, n_rounds=n, ess=ess,
                         max_weight=float(w.max()) if len(w) else math.nan,
                         mean_weight=float(w.mean()) if len(w) else math.nan, n_clipped=int(parts.n_clipped[method]),
                         clip=None if clip is None else float(clip), reward_range=rng_, support=parts.support,
                         n_positions=logs.n_positions)


def _check_options(alpha, ci, n_bootstrap, clip):
    check_number(alpha, "alpha", min=1e-12, max=1.0 - 1e-12, hint="alpha must lie in (0, 1): 0.05 for a 95% interval")
    if ci not in ("normal", "bootstrap"):
        raise ParameterError(f"ci must be 'normal' or 'bootstrap', got {ci!r}")
    if ci == "bootstrap":
        check_int(n_bootstrap, "n_bootstrap", min=2, max=MAX_BOOTSTRAP, hint="1000-10000 resamples")
    check_number(clip, "clip", min=0, min_open=True, finite=False, allow_none=True,
                 expected="a positive maximum importance weight or None")


def estimate_slates(logs: LoggedSlates, target: Any, method: str = "ips-position", *,
                    target_propensities: ArrayLike | None = None,
                    reward_model: Any = None, clip: float | None = None, alpha: float = 0.05, ci: str = "normal",
                    n_bootstrap: int = 1000, random_state: int | None = 0,
                    reward_range: Literal["auto"] | tuple[float, float] | None = "auto") -> SlateEstimate:
    """Estimate a target ranker's clicks per shown slot from logged, randomised lists.

    Parameters
    ----------
    logs : LoggedSlates
        The logged lists (e.g. :meth:`LoggedSlates.from_impressions`).
    target : 2-D array of ids (n_rounds, J)
        The target's list for each logged round, position 1 first (e.g. the candidate model's
        ``recommend`` for the round's user); with ``target_propensities``, the items a randomised
        target draws from.
    method : str
        One of :data:`SLATE_METHODS` (see the module doc).
    target_propensities : array (n_rounds, J, K), optional
        A randomised target: the probability that it shows ``target[i, j]`` at position ``k``
        (``policy.marginals(scores, K)`` of a :mod:`persona.serving.explore` policy, per round).
    reward_model : None, PositionBasedModel or object with predict(rows, items, positions)
        For ``dm``, ``dr-position`` and ``dr-pi``. None: a :class:`PositionBasedModel` cross-fitted
        on the logs.
    clip : float, optional
        Cut importance weights above this value (position weights, or slate weights).
    alpha, ci, n_bootstrap, random_state, reward_range
        As in :func:`persona.ope.estimate`.

    Returns
    -------
    SlateEstimate

    Raises
    ------
    DataError
        Shapes that do not match the logs; a shown item missing from its round's candidates.
    ParameterError
        An unknown method; ``pi`` / ``dr-pi`` without candidates and policy; ``ips-slate`` without
        slate propensities or with a randomised target; bad options.
    """
    method = _check_method(method)
    _check_options(alpha, ci, n_bootstrap, clip)
    reward_range = _check_reward_range(reward_range)
    parts = _parts(logs, target, target_propensities, [method], reward_model, clip, random_state)
    return _finish(method, parts, logs, alpha=alpha, ci=ci, n_bootstrap=n_bootstrap, random_state=random_state,
                   clip=clip, reward_range=reward_range)


def compare_slates(logs: LoggedSlates, target: Any, methods: Sequence[str] | None = None, **options: Any
                   ) -> dict[str, SlateEstimate]:
    """Several slate estimators on the same logs and target (the reward model fitted once).

    ``methods``: default every method the logs allow (``pi`` / ``dr-pi`` with candidates and a
    policy, ``ips-slate`` with slate propensities and a deterministic target). Takes the keyword
    options of :func:`estimate_slates`; returns ``{method: SlateEstimate}``.
    """
    target_propensities = options.pop("target_propensities", None)
    if methods is None:
        methods = [m for m in SLATE_METHODS
                   if (m not in _NEEDS_GAMMA or (logs.candidates is not None and logs.policy is not None))
                   and (m != "ips-slate" or (logs.slate_propensities is not None and target_propensities is None))]
    elif isinstance(methods, str):
        methods = [methods]
    methods = [_check_method(m) for m in methods]
    alpha = options.pop("alpha", 0.05)
    ci = options.pop("ci", "normal")
    n_bootstrap = options.pop("n_bootstrap", 1000)
    random_state = options.pop("random_state", 0)
    clip = options.pop("clip", None)
    reward_model = options.pop("reward_model", None)
    reward_range = _check_reward_range(options.pop("reward_range", "auto"))
    if options:
        raise ParameterError(f"unknown options {sorted(options)}; compare_slates takes the options of estimate_slates")
    _check_options(alpha, ci, n_bootstrap, clip)
    parts = _parts(logs, target, target_propensities, methods, reward_model, clip, random_state)
    return {m: _finish(m, parts, logs, alpha=alpha, ci=ci, n_bootstrap=n_bootstrap, random_state=random_state,
                       clip=clip, reward_range=reward_range) for m in methods}
