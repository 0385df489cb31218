"""The off-policy estimators: DM, IPW, SNIPW, DR, SNDR, with confidence intervals.

Notation, for round ``i`` with logged action ``a_i``, position ``k_i``, reward ``r_i`` and logging
propensity ``p_i``; ``pi_i(a)`` is the target policy's probability of action ``a`` in that round (at
position ``k_i``), ``q_i(a)`` a reward model's prediction for action ``a`` (at ``k_i``):

- importance weight ``w_i = pi_i(a_i) / p_i``, optionally clipped: ``w_i = min(w_i, clip)``
- ``dm_i = sum_a pi_i(a) q_i(a)``, the model's expected reward under the target policy
- ``e_i = r_i - q_i(a_i)``, the model's residual on the logged action

===========  ===================================================================================
method       value
===========  ===================================================================================
``dm``       ``mean(dm_i)``
``ipw``      ``mean(w_i r_i)``
``snipw``    ``sum(w_i r_i) / sum(w_i)``
``dr``       ``mean(dm_i + w_i e_i)``
``sndr``     ``mean(dm_i) + sum(w_i e_i) / sum(w_i)``
===========  ===================================================================================

Every estimator is a mean of per-round terms ``phi_i`` (for the self-normalised ones, the terms of
their first-order linearisation, whose mean is exactly the estimate: ``snipw``:
``V + w_i (r_i - V) / mean(w)``; ``sndr``: ``dm_i + C + w_i (e_i - C) / mean(w)`` with
``C = sum(w e) / sum(w)``). The default interval is the normal approximation
``value +- z_{1 - alpha/2} * std(phi, ddof=1) / sqrt(n)``; ``ci="bootstrap"`` resamples rounds
with replacement (seeded) and recomputes the estimator on each resample (percentile interval).

With slates (``position`` in the logs), every row of the logs is one (impression, slot) pair and the
value is the expected reward per shown slot -- the click-through rate of the Open Bandit Dataset --
with ``pi_i`` the target's distribution at the logged slot.

Estimates respect the reward's range: a policy's expected reward lies in the range of its rewards,
so the value and both ends of the interval are clipped to it (a click rate's interval never goes
below 0 or above 1). The range is known from the data when every reward is 0 or 1 (``[0, 1]``);
otherwise pass ``reward_range=(lo, hi)``, or ``reward_range=None`` for the unclipped textbook values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError
from ..typing import ArrayLike

if TYPE_CHECKING:  # loaded where used
    from ..marketing.logged import LoggedFeedback
    from .reward_model import RewardModel

__all__ = ["METHODS", "Estimate", "estimate", "compare", "on_policy"]

#: The estimators, in the order :func:`compare` runs them.
METHODS = ("dm", "ipw", "snipw", "dr", "sndr")
_NEEDS_MODEL = {"dm", "dr", "sndr"}
_CI_METHODS = ("normal", "bootstrap")
#: Largest ``n_bootstrap`` accepted.
MAX_BOOTSTRAP = 100_000
_BOOTSTRAP_CHUNK = 64  # resamples drawn at once (memory: chunk x n_rounds indices)


@dataclass(frozen=True)
class Estimate:
    """One off-policy estimate with its interval and the importance-weight diagnostics.

    Attributes
    ----------
    method : str
        ``"dm"``, ``"ipw"``, ``"snipw"``, ``"dr"``, ``"sndr"`` (or ``"on-policy"``).
    value : float
        The estimated expected reward per round of the target policy.
    ci_low, ci_high : float
        The ``1 - alpha`` confidence interval (NaN with a single round and the normal interval).
    std_error : float
        Standard error (normal: of the per-round terms' mean; bootstrap: std of the resampled values).
    alpha : float
    ci : str
        ``"normal"`` or ``"bootstrap"``.
    n_rounds : int
    ess : float
        Effective sample size of the importance weights, ``sum(w)^2 / sum(w^2)`` (n_rounds when the
        target equals the logging policy; small values mean few rounds carry the estimate).
    max_weight, mean_weight : float
        Largest and mean importance weight (after clipping). A mean far from 1 signals a target that
        puts mass where the logging policy rarely went, or wrong propensities.
    n_clipped : int
        Rounds whose weight was cut down to ``clip``.
    clip : float or None
    reward_range : (float, float) or None
        The range the value and the interval were clipped to (``(0.0, 1.0)`` for 0/1 rewards; an
        open side is ``-inf`` / ``inf``); None when nothing was clipped to a range.
    """

    method: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    alpha: float
    ci: str
    n_rounds: int
    ess: float
    max_weight: float
    mean_weight: float
    n_clipped: int
    clip: float | None
    reward_range: tuple | None = None

    def as_dict(self) -> dict:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)

    def __repr__(self) -> str:
        return (f"Estimate({self.method}: {self.value:.6g} [{self.ci_low:.6g}, {self.ci_high:.6g}], "
                f"{self.ci} {100 * (1 - self.alpha):g}% CI, n={self.n_rounds}, ess={self.ess:.1f}, "
                f"max_weight={self.max_weight:.4g})")


# ---------------------------------------------------------------------------------------------- inputs
def _check_logged(logged):
    from ..marketing.logged import LoggedFeedback

    if not isinstance(logged, LoggedFeedback):
        raise DataError(f"logged: expected a persona.LoggedFeedback, got {type(logged).__name__}; build one with "
                        "ps.LoggedFeedback(action=..., reward=..., propensity=...)")
    p = np.asarray(logged.propensity, dtype=np.float64)
    n = len(logged.action)
    if p.shape != (n,):
        raise DataError(f"propensity has shape {p.shape} but there are {n} rounds; pass one per round")
    bad = ~(np.isfinite(p) & (p > 0.0) & (p <= 1.0))
    if bad.any():  # LoggedFeedback checks this too; the arrays may have been replaced since
        rows = np.flatnonzero(bad)[:5]
        raise DataError(f"propensity must lie in (0, 1], got {p[rows].tolist()} at rows {rows.tolist()}; pass the "
                        "logging policy's probability of each logged action")
    r = np.asarray(logged.reward, dtype=np.float64)
    if r.shape != (n,) or not np.isfinite(r).all():
        raise DataError(f"reward: expected {n} finite values, got shape {r.shape}")
    return p, r


def _positions(logged) -> np.ndarray:
    return np.zeros(len(logged.action), dtype=np.int64) if logged.position is None else np.asarray(logged.position)


def _target_at_logged(logged, target) -> np.ndarray:
    """The target's distribution over actions at each round's logged position: (n_rounds, n_actions).

    Validates the whole array: shape, finiteness, entries in [0, 1], each row (per position) sums to 1.
    """
    given = np.asarray(target)
    try:
        t = given.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise DataError("target: expected a numeric array of action probabilities") from None
    n, n_actions = logged.n_rounds, logged.n_actions
    if t.ndim not in (2, 3):
        raise DataError(f"target: expected shape (n_rounds, n_actions) or (n_rounds, n_actions, n_positions), "
                        f"got {t.shape}")
    if t.shape[0] != n:
        raise DataError(f"target has {t.shape[0]} rows but the logs have {n} rounds; pass one row per logged round")
    if t.shape[1] != n_actions:
        raise DataError(f"target has {t.shape[1]} actions (axis 1) but the logs have n_actions={n_actions}; "
                        "give a probability for every action, 0 for those the policy never takes")
    if not np.isfinite(t).all():
        where = np.argwhere(~np.isfinite(t))[:5].tolist()
        raise DataError(f"target: non-finite probabilities at {where}")
    if (t < 0).any() or (t > 1 + 1e-12).any():
        where = np.argwhere((t < 0) | (t > 1 + 1e-12))[:5].tolist()
        raise DataError(f"target: probabilities must lie in [0, 1], got {t[tuple(np.array(where).T)].tolist()} "
                        f"at {where}")
    sums = t.sum(axis=1)
    eps = np.finfo(given.dtype if given.dtype.kind == "f" else np.float64).eps  # float32 rows sum less exactly
    tol = max(1e-6, 16 * eps * n_actions)
    bad = np.abs(sums - 1.0) > tol
    if bad.any():
        where = np.argwhere(bad)[:5]
        got = sums[tuple(where.T)].tolist()
        per = "(round, position)" if t.ndim == 3 else "round"
        raise DataError(f"target: each {per} must sum to 1 over actions, got sums {got} at {where.tolist()}; "
                        "normalise the rows (e.g. ps.ope.softmax_policy)")
    pos = _positions(logged)
    if t.ndim == 2:
        return t
    n_pos = t.shape[2]
    if logged.position is None and n_pos != 1:
        raise DataError(f"target has {n_pos} positions (axis 2) but the logs have no position; pass a 2-D target "
                        "or logs with position")
    if len(pos) and pos.max() >= n_pos:
        rows = np.flatnonzero(pos >= n_pos)[:5]
        raise DataError(f"target has {n_pos} positions but the logs show positions {pos[rows].tolist()} at rows "
                        f"{rows.tolist()}; give the target a distribution for every logged position")
    return t[np.arange(n), :, pos]


def _model_at_logged(logged, reward_model, random_state) -> np.ndarray:
    """Predicted rewards for every action at each round's logged position: (n_rounds, n_actions)."""
    from .reward_model import RewardModel

    if reward_model is None:
        reward_model = RewardModel(random_state=random_state)
    if isinstance(reward_model, RewardModel):
        return reward_model.cross_predict(logged)
    try:
        q = np.asarray(reward_model, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("reward_model: expected an array of predicted rewards or a ps.ope.RewardModel") from None
    n, n_actions = logged.n_rounds, logged.n_actions
    if q.ndim not in (2, 3) or q.shape[0] != n or q.shape[1] != n_actions:
        raise DataError(f"reward_model: expected predicted rewards of shape ({n}, {n_actions}) or "
                        f"({n}, {n_actions}, n_positions), got {q.shape}; one row per round, one column per action")
    if not np.isfinite(q).all():
        where = np.argwhere(~np.isfinite(q))[:5].tolist()
        raise DataError(f"reward_model: non-finite predictions at {where}")
    if q.ndim == 2:
        return q
    pos = _positions(logged)
    if logged.position is None and q.shape[2] != 1:
        raise DataError(f"reward_model has {q.shape[2]} positions (axis 2) but the logs have no position")
    if len(pos) and pos.max() >= q.shape[2]:
        raise DataError(f"reward_model has {q.shape[2]} positions but the logs show position {int(pos.max())}")
    return q[np.arange(n), :, pos]


def _check_method(method) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ParameterError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method.lower()


def _check_options(alpha, ci, n_bootstrap, clip):
    # 1 - alpha / 2 must stay below 1 in floating point, or the normal quantile is undefined
    check_number(alpha, "alpha", min=1e-12, max=1.0 - 1e-12,
                 hint="alpha must lie in (0, 1): 0.05 for a 95% interval")
    if ci not in _CI_METHODS:
        raise ParameterError(f"ci must be one of {list(_CI_METHODS)}, got {ci!r}")
    if ci == "bootstrap":
        # bounded: the work is n_bootstrap x n_rounds, and percentile intervals settle long before the cap
        check_int(n_bootstrap, "n_bootstrap", min=2, max=MAX_BOOTSTRAP,
                  hint="1000-10000 resamples give a stable 95% interval")
    check_number(clip, "clip", min=0, min_open=True, finite=False, allow_none=True,
                 expected="a positive maximum importance weight or None")


_AUTO = "auto"


def _check_reward_range(reward_range) -> tuple | str | None:
    """``"auto"``, None, or ``(lo, hi)`` as floats with ``lo < hi`` (None or an infinity: an open side)."""
    if reward_range is None or (isinstance(reward_range, str) and reward_range == _AUTO):
        return reward_range
    hint = ("pass reward_range=(low, high) with low < high (None for an open side), 'auto' (0/1 rewards: "
            "[0, 1]) or None (no clipping)")
    if isinstance(reward_range, (str, bytes)) or not hasattr(reward_range, "__len__") or len(reward_range) != 2:
        raise ParameterError(f"reward_range: expected a pair (low, high), got {reward_range!r}; {hint}")
    lo, hi = (check_number(-math.inf if b is None and k == 0 else math.inf if b is None else b,
                           f"reward_range[{k}]", finite=False, hint=hint) for k, b in enumerate(reward_range))
    if not lo < hi:
        raise ParameterError(f"reward_range: expected low < high, got {reward_range!r}; {hint}")
    return (lo, hi)


def _resolve_range(reward_range, r: np.ndarray) -> tuple | None:
    """The range the estimate is clipped to: ``[0, 1]`` for 0/1 rewards under ``"auto"``."""
    if reward_range is None:
        return None
    if reward_range == _AUTO:
        return (0.0, 1.0) if len(r) and bool(np.all((r == 0.0) | (r == 1.0))) else None
    lo, hi = reward_range
    out = (r < lo) | (r > hi)
    if out.any():
        rows = np.flatnonzero(out)[:5]
        raise DataError(f"reward_range=({lo:g}, {hi:g}) but rewards {r[rows].tolist()} at rows {rows.tolist()} "
                        "lie outside it; pass the range every reward lies in, or reward_range=None")
    return (lo, hi)


# ------------------------------------------------------------------------------------------ estimators
@dataclass
class _Parts:
    """Per-round ingredients every estimator is built from."""

    w: np.ndarray      # importance weights (clipped)
    r: np.ndarray      # rewards
    dm: np.ndarray     # sum_a pi_i(a) q_i(a)   (zeros when no model is needed)
    q_a: np.ndarray    # q_i(a_i)                (zeros when no model is needed)
    n_clipped: int


def _value_and_terms(method: str, parts: _Parts) -> tuple[float, np.ndarray]:
    """The estimate and its per-round terms (mean of terms == estimate)."""
    w, r, dm, q_a = parts.w, parts.r, parts.dm, parts.q_a
    if method == "dm":
        terms = dm
    elif method == "ipw":
        terms = w * r
    elif method == "dr":
        terms = dm + w * (r - q_a)
    else:
        wbar = w.mean()
        if not wbar > 0:
            raise DataError(f"{method}: the target policy gives probability 0 to every logged action, so the "
                            "self-normalised estimate is undefined; use 'dm', 'ipw' or 'dr', or a target with overlap")
        if method == "snipw":
            v = float(np.dot(w, r) / w.sum())
            terms = v + w * (r - v) / wbar
        else:  # sndr
            e = r - q_a
            c = float(np.dot(w, e) / w.sum())
            terms = dm + c + w * (e - c) / wbar
    return float(terms.mean()), terms


def _batch_values(method: str, parts: _Parts, idx: np.ndarray) -> np.ndarray:
    """The estimator recomputed on each row of resampled round indices ``idx`` (B, n)."""
    w, r, dm, q_a = parts.w, parts.r, parts.dm, parts.q_a
    if method == "dm":
        return dm[idx].mean(axis=1)
    if method == "ipw":
        return (w * r)[idx].mean(axis=1)
    if method == "dr":
        return (dm + w * (r - q_a))[idx].mean(axis=1)
    ws = w[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "snipw":
            return (w * r)[idx].sum(axis=1) / ws
        return dm[idx].mean(axis=1) + (w * (r - q_a))[idx].sum(axis=1) / ws


def _bootstrap(method: str, parts: _Parts, n_bootstrap: int, random_state) -> np.ndarray:
    """Bootstrap values; resample ``b`` uses ``rng.integers(0, n, n)``, the ``b``-th draw of one generator."""
    rng = np.random.default_rng(random_state)
    n = len(parts.w)
    out = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        b = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start:start + b] = _batch_values(method, parts, idx)
    return out


def _finish(method, value, terms, parts: _Parts, *, alpha, ci, n_bootstrap, random_state, clip,
            reward_range=None) -> Estimate:
    n = len(terms)
    w = parts.w
    sw2 = float(np.dot(w, w))
    ess = float(w.sum() ** 2 / sw2) if sw2 > 0 else 0.0
    if ci == "normal":
        se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        lo, hi = value - z * se, value + z * se
    else:
        boot = _bootstrap(method, parts, n_bootstrap, random_state)
        boot = boot[np.isfinite(boot)]  # a resample with no overlap has no self-normalised value
        if len(boot) == 0:
            lo = hi = se = math.nan
        else:
            lo, hi = (float(x) for x in np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0]))
            se = float(boot.std(ddof=1)) if len(boot) > 1 else math.nan
    rng_ = _resolve_range(reward_range, parts.r)
    if rng_ is not None:
        # the target's expected reward lies in the rewards' range: clipping to it only moves the
        # value and the interval's ends closer to the truth (NaN, a single round's interval, stays NaN)
        value, lo, hi = (min(max(float(x), rng_[0]), rng_[1]) if x == x else x for x in (value, lo, hi))
    return Estimate(method=method, value=float(value), ci_low=float(lo), ci_high=float(hi), std_error=float(se),
                    alpha=float(alpha), ci=ci, n_rounds=n, ess=ess, max_weight=float(w.max()),
                    mean_weight=float(w.mean()), n_clipped=int(parts.n_clipped),
                    clip=None if clip is None else float(clip), reward_range=rng_)


def _parts(logged, target, methods, reward_model, clip, random_state) -> _Parts:
    p, r = _check_logged(logged)
    pi = _target_at_logged(logged, target)
    n = logged.n_rounds
    a = np.asarray(logged.action, dtype=np.int64)
    w = pi[np.arange(n), a] / p
    n_clipped = 0
    if clip is not None:
        n_clipped = int((w > clip).sum())
        w = np.minimum(w, float(clip))
    if any(m in _NEEDS_MODEL for m in methods):
        q = _model_at_logged(logged, reward_model, random_state)
        dm = np.einsum("ij,ij->i", pi, q)
        q_a = q[np.arange(n), a]
    else:
        dm = q_a = np.zeros(n)
    return _Parts(w=w, r=r, dm=dm, q_a=q_a, n_clipped=n_clipped)


def estimate(logged: LoggedFeedback, target: ArrayLike, method: str = "snipw", *,
             reward_model: ArrayLike | RewardModel | None = None, clip: float | None = None,
             alpha: float = 0.05, ci: str = "normal", n_bootstrap: int = 1000, random_state: int | None = 0,
             reward_range: Literal["auto"] | tuple[float, float] | None = "auto") -> Estimate:
    """Estimate the expected reward of the ``target`` policy from logged feedback.

    Parameters
    ----------
    logged : persona.LoggedFeedback
        The logs: action, reward, the logging policy's propensity, optionally context and position.
    target : array (n_rounds, n_actions) or (n_rounds, n_actions, n_positions)
        The evaluated policy's probability of every action in every logged round (and position);
        each row sums to 1 (per position). A 2-D target uses the same distribution at every position.
    method : {"dm", "ipw", "snipw", "dr", "sndr"}
        See the module docstring for the formulas.
    reward_model : array, RewardModel or None
        For ``dm``, ``dr`` and ``sndr``: predicted rewards of shape (n_rounds, n_actions) or
        (n_rounds, n_actions, n_positions), or a :class:`~persona.ope.RewardModel` to cross-fit on the
        logs (None: ``RewardModel(random_state=random_state)``, logistic / ridge on context x action
        one-hot, 3 folds).
        Ignored by ``ipw`` and ``snipw``.
    clip : float, optional
        Cut importance weights above this value (less variance, some bias).
    alpha : float
        The interval is a ``1 - alpha`` interval.
    ci : {"normal", "bootstrap"}
        Normal approximation on the per-round terms, or a percentile bootstrap over rounds.
    n_bootstrap : int
        Resamples for ``ci="bootstrap"``.
    random_state : int or None
        Seed of the bootstrap (and of the reward model's folds when it is fitted here).
    reward_range : "auto", (low, high) or None
        The range every reward lies in; the value and both ends of the interval (normal or
        bootstrap) are clipped to it, since a policy's expected reward cannot leave it: a click
        rate's interval never goes below 0 or above 1. ``"auto"`` (default): ``(0, 1)`` when every
        reward is 0 or 1, else no clipping. ``(low, high)``: your range (None for an open side;
        a reward outside it is a DataError). ``None``: no clipping (the textbook values; IPW's can
        leave the range when weights are large).

    Returns
    -------
    Estimate
        ``value``, ``ci_low``, ``ci_high``, ``std_error``, weight diagnostics (``ess``, ``max_weight``)
        and the ``reward_range`` applied.

    Raises
    ------
    DataError
        Target rows that do not sum to 1, probabilities outside [0, 1], shapes that do not match the
        logs, propensities outside (0, 1], no overlap for a self-normalised estimator.
    ParameterError
        An unknown method or ci, alpha outside (0, 1), clip <= 0, a malformed reward_range.

    Examples
    --------
    >>> import numpy as np, persona as ps
    >>> logged = ps.LoggedFeedback(action=[0, 1, 2, 1], reward=[1, 0, 1, 1], propensity=[1 / 3] * 4)
    >>> est = ps.ope.estimate(logged, ps.ope.uniform_policy(4, 3), method="snipw")
    >>> est.value                                     # uniform logging, uniform target: the mean reward
    0.75
    >>> q = np.full((4, 3), 0.5)
    >>> ps.ope.estimate(logged, ps.ope.uniform_policy(4, 3), method="dm", reward_model=q).value
    0.5
    """
    method = _check_method(method)
    _check_options(alpha, ci, n_bootstrap, clip)
    reward_range = _check_reward_range(reward_range)
    parts = _parts(logged, target, (method,), reward_model, clip, random_state)
    value, terms = _value_and_terms(method, parts)
    return _finish(method, value, terms, parts, alpha=alpha, ci=ci, n_bootstrap=n_bootstrap,
                   random_state=random_state, clip=clip, reward_range=reward_range)


def compare(logged: LoggedFeedback, target: ArrayLike, methods: Sequence[str] = METHODS,
            **options: Any) -> dict[str, Estimate]:
    """Run several estimators on the same logs and target; the reward model is fitted once.

    Takes the keyword options of :func:`estimate`; returns ``{method: Estimate}`` in the given order.

    >>> import persona as ps
    >>> logged = ps.LoggedFeedback(action=[0, 1, 2, 1], reward=[1, 0, 1, 1], propensity=[1 / 3] * 4)
    >>> out = ps.ope.compare(logged, ps.ope.uniform_policy(4, 3), methods=("ipw", "snipw"))
    >>> {m: e.value for m, e in out.items()}
    {'ipw': 0.75, 'snipw': 0.75}
    """
    if isinstance(methods, str):
        methods = (methods,)
    if not hasattr(methods, "__iter__"):
        raise ParameterError(f"methods: expected method names from {list(METHODS)}, got {methods!r}")
    methods = [_check_method(m) for m in methods]
    clip = options.pop("clip", None)
    alpha = options.pop("alpha", 0.05)
    ci = options.pop("ci", "normal")
    n_bootstrap = options.pop("n_bootstrap", 1000)
    random_state = options.pop("random_state", 0)
    reward_model = options.pop("reward_model", None)
    reward_range = options.pop("reward_range", _AUTO)
    if options:
        raise ParameterError(f"unknown options {sorted(options)}; compare takes the keyword options of estimate")
    _check_options(alpha, ci, n_bootstrap, clip)
    reward_range = _check_reward_range(reward_range)
    parts = _parts(logged, target, methods, reward_model, clip, random_state)
    out = {}
    for m in methods:
        value, terms = _value_and_terms(m, parts)
        out[m] = _finish(m, value, terms, parts, alpha=alpha, ci=ci, n_bootstrap=n_bootstrap,
                         random_state=random_state, clip=clip, reward_range=reward_range)
    return out


def on_policy(logged: LoggedFeedback, *, alpha: float = 0.05, ci: str = "normal", n_bootstrap: int = 1000,
              random_state: int | None = 0, reward_range: Literal["auto"] | tuple[float, float] | None = "auto") -> Estimate:
    """The logging policy's own value: the mean logged reward, with the same kind of interval
    (clipped to ``reward_range`` as in :func:`estimate`).

    >>> import persona as ps
    >>> ps.ope.on_policy(ps.LoggedFeedback(action=[0, 1], reward=[1, 0], propensity=[0.5, 0.5])).value
    0.5
    """
    _check_options(alpha, ci, n_bootstrap, None)
    reward_range = _check_reward_range(reward_range)
    p, r = _check_logged(logged)
    n = len(r)
    parts = _Parts(w=np.ones(n), r=r, dm=np.zeros(n), q_a=np.zeros(n), n_clipped=0)
    value, terms = _value_and_terms("ipw", parts)
    est = _finish("ipw", value, terms, parts, alpha=alpha, ci=ci, n_bootstrap=n_bootstrap,
                  random_state=random_state, clip=None, reward_range=reward_range)
    return Estimate(**{**est.as_dict(), "method": "on-policy"})
