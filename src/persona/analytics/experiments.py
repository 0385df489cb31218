"""Analysis of online experiments: per-user outcomes, a sample-ratio-mismatch check, differences
with confidence intervals under a valid stopping rule, a power calculation, and interleaving.

The unit is the **user** -- the unit a :meth:`RecommenderService.experiment` randomises -- so
the many impressions of one user are not taken as independent. A rate (CTR, add-to-cart rate,
conversion per impression, revenue per impression) is the ratio of the variant's sums, and its
variance comes from the delta method over users: with per-user numerators ``X_u`` and
impressions ``N_u`` of ``n`` users, ``m = sum X / sum N`` and ``Var(m) = var(X_u - m N_u) /
(n mean(N)^2)``. Two variants' difference ``d = m_B - m_A`` has ``V = Var(m_A) + Var(m_B)``.

Two stopping rules (``method=``):

``"sequential"`` (default): an always-valid confidence sequence -- the normal-mixture sequential
    probability ratio test (Robbins' mixture; Johari, Pekelis and Walsh 2017, "Always valid
    inference"), in the asymptotic form of Howard et al. (2021) and Waudby-Smith et al. (2023).
    At every look the interval is ``d +- sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V +
    tau^2) / V) / 2))`` with ``tau^2 = rho^2 V t`` (``t`` users so far) and ``rho^2 = (-2 log
    alpha + log(1 - 2 log alpha)) / horizon``, the choice that makes it tightest at ``horizon``
    users. Look as often as you like and stop as soon as the interval leaves 0: the chance that it
    ever excludes the true difference is at most ``alpha`` (for large samples). ``p_value`` is the
    always-valid one, ``min(1, 1 / Lambda)``. ``horizon`` only tunes where it is tightest.
``"fixed"``: the classical interval ``d +- z V^(1/2)``, valid only at one look after a sample
    size fixed in advance (:func:`sample_size`): with ``horizon`` (users per variant) the
    decision waits until every variant has that many. Looking repeatedly and stopping at the
    first significant result inflates false positives (a 5% test peeked at ten times rejects an
    A/A test some 15-20% of the time); the sequential rule is the one to peek with.

The SRM check compares the users exposed per variant with the split (chi-square); a p-value
under 0.001 means the assignment or the logging is broken (bots, a redirect losing a variant,
users crossing variants), and the comparison should not be trusted.

Interleaving (:func:`interleaving_result`) credits each click on a team-drafted list to the
ranker that contributed the item; per user (or request) the ranker with more credited clicks
wins, and a two-sided sign (binomial) test over the non-tied units says whether one is preferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError
from .online import _load, _outcomes, _windows, impression_outcomes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["experiment_users", "compare_variants", "srm_test", "sample_size", "analyze_experiment",
           "interleaving_result", "ExperimentResult", "InterleavingResult", "METRICS"]

#: metric name -> the per-user numerator it divides by impressions
METRICS = {"ctr": "clicks", "cart_rate": "carts", "conversion": "purchases", "revenue_per_impression": "revenue"}
_DEFAULT_HORIZON = 10_000


def _alpha(alpha) -> float:
    return check_number(alpha, "alpha", min=0, max=0.5, min_open=True, expected="a level in (0, 0.5], e.g. 0.05")


# ------------------------------------------------------------------------------------ per-user outcomes
def experiment_users(store=None, experiment: str | None = None, *, impressions=None, events=None, since=None,
                     until=None, windows=None, outcomes=None) -> pd.DataFrame:
    """Each exposed user's impressions and attributed outcomes in ``experiment``, per variant.

    Returns a DataFrame with ``variant``, ``user``, ``impressions``, ``clicks``, ``carts``,
    ``purchases`` (impressions bought) and ``revenue``. Users logged in more than one variant (a
    changed salt or split, a shared device id) are left out and counted in
    ``attrs["users_in_several_variants"]``; interleaved impressions are not part of it.
    """
    import pandas as pd

    if experiment is not None and not isinstance(experiment, str):
        raise ParameterError(f"experiment expected the experiment's name (its salt by default), got "
                             f"{type(experiment).__name__}")
    windows, outcomes = _windows(windows), _outcomes(outcomes)
    imps, out = _load(store, impressions, events, since, until, windows, outcomes, experiment=experiment)
    if "variant" not in imps.columns:
        raise DataError("impressions: no 'variant' column; expected the columns of store.impressions()")
    flags, _ = impression_outcomes(imps, out, windows)
    variant = imps["variant"].to_numpy()
    keep = pd.notna(variant) & (variant != "interleaved")
    frame = pd.DataFrame({"variant": variant[keep], "user": imps["user"].to_numpy()[keep],
                          "impressions": 1, **{k: flags[c].to_numpy()[keep] for k, c in
                                               (("clicks", "clicked"), ("carts", "carted"),
                                                ("purchases", "purchased"), ("revenue", "revenue"))}})
    per = frame.groupby(["variant", "user"], sort=True).sum().reset_index()
    crossed = per["user"].duplicated(keep=False).to_numpy()
    n_crossed = int(per.loc[crossed, "user"].nunique())
    per = per[~crossed].reset_index(drop=True)
    per.attrs["users_in_several_variants"] = n_crossed
    return per


# ------------------------------------------------------------------------------------ statistics
def srm_test(counts: Mapping[str, int], split: Mapping[str, float] | Sequence[float] | None = None) -> float:
    """p-value of the chi-square test that the users per variant follow ``split`` (default: equal).

    >>> round(srm_test({"A": 5000, "B": 5000}), 3), srm_test({"A": 5200, "B": 4800}) < 0.001
    (1.0, True)
    """
    from scipy.stats import chisquare

    names = list(counts)
    observed = np.array([counts[k] for k in names], dtype=np.float64)
    if len(names) < 2 or observed.sum() <= 0:
        return float("nan")
    if split is None:
        shares = np.full(len(names), 1.0 / len(names))
    elif isinstance(split, Mapping):
        missing = [k for k in names if k not in split]
        if missing:
            raise ParameterError(f"split has no share for variant(s) {missing}; give one per variant")
        shares = np.array([float(split[k]) for k in names])
    else:
        shares = np.asarray(list(split), dtype=np.float64)
        if len(shares) != len(names):
            raise ParameterError(f"split has {len(shares)} shares for {len(names)} variants")
    if not np.all(np.isfinite(shares)) or shares.min() <= 0:
        raise ParameterError(f"split expected positive shares, got {shares.tolist()}")
    expected = shares / shares.sum() * observed.sum()
    return float(chisquare(observed, expected).pvalue)


def sample_size(baseline: float, mde: float, *, alpha: float = 0.05, power: float = 0.8,
                relative: bool = False) -> int:
    """Units per variant a fixed-horizon test of two rates needs (two-sided, normal approximation).

    ``baseline``: the control's rate (e.g. a CTR of 0.05); ``mde``: the smallest difference worth
    detecting, absolute (0.005) or, with ``relative=True``, a share of the baseline (0.1 for +10%).
    The units are those of the rate: impressions for CTR. For users as the unit, divide by the
    impressions per user and multiply by the design effect ``1 + (m - 1) ICC`` of ``m`` impressions
    per user with intra-user correlation ``ICC``.

    >>> sample_size(0.05, 0.1, relative=True)
    31234
    """
    baseline = check_number(baseline, "baseline", min=0, max=1, min_open=True, max_open=True,
                            expected="a rate in (0, 1)")
    mde = check_number(mde, "mde", min=0, min_open=True, expected="a difference > 0")
    power = check_number(power, "power", min=0.5, max=1, max_open=True, expected="a probability in [0.5, 1)")
    alpha = _alpha(alpha)
    from scipy.special import ndtri

    p1 = baseline
    p2 = baseline * (1 + mde) if relative else baseline + mde
    if not 0 < p2 < 1:
        raise ParameterError(f"baseline {baseline} with mde {mde} gives a rate of {p2:g}, outside (0, 1)")
    z_a, z_b = float(ndtri(1 - alpha / 2)), float(ndtri(power))
    bar = (p1 + p2) / 2
    n = (z_a * math.sqrt(2 * bar * (1 - bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    return int(math.ceil(n))


def _variant_moments(codes: np.ndarray, k: int, x: np.ndarray, m: np.ndarray) -> dict:
    """Per variant code: users ``n``, estimate ``sum X / sum N`` and its delta-method variance."""
    n = np.bincount(codes, minlength=k).astype(np.float64)
    sx, sm = np.bincount(codes, x, minlength=k), np.bincount(codes, m, minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = sx / sm
        d = x - est[codes] * m
        s1, s2 = np.bincount(codes, d, minlength=k), np.bincount(codes, d * d, minlength=k)
        var_d = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
        var = var_d / (n * (sm / n) ** 2)
    return {"n": n, "est": est, "var": np.where(n > 1, var, np.nan)}


def compare_variants(users, metrics: str | Sequence[str] = ("ctr",), *, control: str | None = None,
                     alpha: float = 0.05, method: str = "sequential", horizon: int | None = None) -> pd.DataFrame:
    """Each variant against ``control`` on ``metrics``: estimates, difference, interval, p-value, decision.

    ``users``: per-user outcomes (:func:`experiment_users`: ``variant``, ``user``, ``impressions``
    and the numerators ``clicks``, ``carts``, ``purchases``, ``revenue``). ``method``:
    ``"sequential"`` (an always-valid interval; ``horizon``: the total users of the pair where it
    is tightest, default 10,000) or ``"fixed"`` (``horizon``: the planned users per variant; the
    decision waits for it). See the module doc for the formulas.

    Decisions: ``"<variant> better"`` / ``"<variant> worse"`` (the interval excludes 0),
    ``"no difference"`` (fixed horizon reached, the interval holds 0), ``"continue"``.
    """
    import pandas as pd
    from scipy.special import ndtr, ndtri

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ParameterError(f"metrics expected names among {list(METRICS)}, got {bad or metrics}")
    if method not in ("sequential", "fixed"):
        raise ParameterError(f"method expected 'sequential' (always valid, peek freely) or 'fixed' (one look at "
                             f"a planned sample size), got {method!r}")
    alpha = _alpha(alpha)
    if horizon is not None:
        horizon = check_int(horizon, "horizon", min=2, expected="a number of users >= 2")
    missing = sorted({"variant", "user", "impressions", *(METRICS[m] for m in metrics)} - set(users.columns))
    if missing:
        raise DataError(f"users: no column {missing}; expected the columns of experiment_users()")
    codes, uniques = pd.factorize(users["variant"], sort=True)
    names = list(uniques)
    if control is None:
        control = names[0] if names else None
    if control not in names:
        raise DataError(f"no exposed user in the control variant {control!r}; variants with users: {names}")
    impressions = users["impressions"].to_numpy(dtype=np.float64)
    c = names.index(control)
    rows = []
    for metric in metrics:
        mom = _variant_moments(codes, len(names), users[METRICS[metric]].to_numpy(dtype=np.float64), impressions)
        a = {k: float(v[c]) for k, v in mom.items()}
        for j, v in enumerate(names):
            if j == c:
                continue
            b = {k: float(val[j]) for k, val in mom.items()}
            d = b["est"] - a["est"]
            var = a["var"] + b["var"]
            t = int(a["n"] + b["n"])
            if method == "fixed":
                z = float(ndtri(1 - alpha / 2))
                ok = var > 0  # False for NaN too
                half = z * math.sqrt(var) if ok else float("nan")
                p = float(2 * ndtr(-abs(d) / math.sqrt(var))) if ok else float("nan")
                reached = horizon is None or min(a["n"], b["n"]) >= horizon
            else:
                half, p = _confidence_sequence(d, var, t, alpha, horizon or _DEFAULT_HORIZON)
                reached = True
            low, high = d - half, d + half
            if not (half == half):  # no variance yet (one user, or no outcome at all)
                decision = "continue"
            elif low > 0:
                decision = f"{v} better" if reached else "continue"
            elif high < 0:
                decision = f"{v} worse" if reached else "continue"
            else:
                decision = "no difference" if method == "fixed" and reached else "continue"
            rows.append({"metric": metric, "control": control, "variant": v, "users_control": int(a["n"]),
                         "users_variant": int(b["n"]), "value_control": float(a["est"]),
                         "value_variant": float(b["est"]), "diff": d, "diff_low": low, "diff_high": high,
                         "relative_diff": d / float(a["est"]) if a["est"] else float("nan"), "p_value": p,
                         "decision": decision})
    return pd.DataFrame(rows)


def _confidence_sequence(d: float, var: float, t: int, alpha: float, horizon: int) -> tuple[float, float]:
    """Half-width of the always-valid interval and the always-valid p-value at this look."""
    if not var > 0:
        return float("nan"), float("nan")
    la = -2 * math.log(alpha)
    rho2 = (la + math.log(la + 1)) / horizon
    tau2 = rho2 * var * t
    ratio = (var + tau2) / var
    half = math.sqrt(2 * var * (var + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log(ratio)))
    log_lambda = -0.5 * math.log(ratio) + d * d * tau2 / (2 * var * (var + tau2))
    return half, float(min(1.0, math.exp(-log_lambda)))


# ------------------------------------------------------------------------------------ the report
@dataclass
class ExperimentResult:
    """What :func:`analyze_experiment` found.

    ``table``: one row per metric and treatment variant (:func:`compare_variants`); ``users``:
    exposed users per variant; ``srm_p``: the sample-ratio-mismatch p-value, ``srm`` True when
    under ``srm_threshold``; ``decision``: the first metric's decision for each variant (``"check
    the assignment"`` when SRM fired).
    """

    experiment: str | None
    method: str
    alpha: float
    table: Any
    users: dict
    srm_p: float
    srm: bool
    decision: dict
    notes: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"experiment {self.experiment!r} ({self.method}, alpha {self.alpha:g}): users "
                 + ", ".join(f"{k} {v}" for k, v in self.users.items())
                 + f"; SRM p = {self.srm_p:.3g}{' -- SAMPLE RATIO MISMATCH' if self.srm else ''}"]
        for r in self.table.itertuples():
            lines.append(f"  {r.metric}: {r.variant} {r.value_variant:.4g} vs {r.control} {r.value_control:.4g}, "
                         f"diff {r.diff:+.4g} [{r.diff_low:+.4g}, {r.diff_high:+.4g}], p {r.p_value:.3g}: "
                         f"{r.decision}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def analyze_experiment(store=None, experiment: str | None = None, *, metrics: str | Sequence[str] = ("ctr", "conversion"),
                       control: str | None = None, split=None, alpha: float = 0.05, method: str = "sequential",
                       horizon: int | None = None, srm_threshold: float = 0.001, impressions=None, events=None,
                       since=None, until=None, windows=None, outcomes=None) -> ExperimentResult:
    """Analyse an A/B experiment from its impressions and attributed outcomes.

    Parameters
    ----------
    store : persona.store.EventStore, optional
        Where the service logged the impressions (or ``impressions=`` / ``events=`` frames).
    experiment : str
        The experiment's name (its salt unless ``name=`` was given).
    metrics : str or sequence of str
        Among ``ctr``, ``cart_rate``, ``conversion``, ``revenue_per_impression``; the first one
        makes ``decision``.
    control : str, optional
        The variant the others are compared with (default: the first name in sorted order;
        ``Experiment.analyze`` passes the first variant).
    split : dict or sequence, optional
        The intended shares, for the SRM check (``Experiment.analyze`` passes its split).
    alpha, method, horizon
        See :func:`compare_variants` and the module doc.
    srm_threshold : float, default 0.001
        The SRM p-value under which the result is flagged.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> users = pd.DataFrame({"variant": np.repeat(["A", "B"], 4000), "user": np.arange(8000),
    ...                       "impressions": 10, "carts": 0, "purchases": 0, "revenue": 0.0,
    ...                       "clicks": np.r_[rng.binomial(10, 0.05, 4000), rng.binomial(10, 0.065, 4000)]})
    >>> res = compare_variants(users, "ctr", control="A")
    >>> res.loc[0, "decision"], round(float(res.loc[0, "diff"]), 3)
    ('B better', 0.018)
    """
    alpha = _alpha(alpha)
    check_number(srm_threshold, "srm_threshold", min=0, max=1, expected="a p-value threshold such as 0.001")
    users = experiment_users(store, experiment, impressions=impressions, events=events, since=since, until=until,
                             windows=windows, outcomes=outcomes)
    counts = users.groupby("variant", sort=True)["user"].size().to_dict()
    notes = []
    if isinstance(split, Mapping):
        counts = {k: int(counts.get(k, 0)) for k in split}
    if sum(counts.values()) == 0:
        raise DataError(f"no impression of experiment {experiment!r} was logged; check the name (the salt by default) "
                        f"and that the service has a store")
    srm_p = srm_test(counts, split) if len(counts) > 1 else float("nan")
    crossed = users.attrs.get("users_in_several_variants", 0)
    if crossed:
        notes.append(f"{crossed} user(s) were logged in several variants and are left out")
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < 2:
        raise DataError(f"experiment {experiment!r} has exposed users in {list(present)} only; nothing to compare yet")
    table = compare_variants(users, metrics, control=control, alpha=alpha, method=method, horizon=horizon)
    srm = bool(srm_p == srm_p and srm_p < srm_threshold)
    first = table[table["metric"] == table["metric"].iloc[0]]
    decision = {r.variant: ("check the assignment" if srm else r.decision) for r in first.itertuples()}
    if srm:
        notes.append(f"sample ratio mismatch (p = {srm_p:.2g} < {srm_threshold:g}): users per variant {counts} do "
                     f"not follow the split; find the cause before trusting the comparison")
    return ExperimentResult(experiment, method, alpha, table, {k: int(v) for k, v in counts.items()}, srm_p, srm,
                            decision, notes)


# ------------------------------------------------------------------------------------ interleaving
@dataclass
class InterleavingResult:
    """Team-draft interleaving: per unit, which ranker's items got more clicks.

    ``wins``: units won by each ranker; ``ties``: units whose clicks split evenly; ``units``:
    units with at least one click; ``delta``: the preference for the second ranker, ``(wins_B +
    ties / 2) / units - 0.5`` (0: no preference; Chapelle et al. 2012); ``p_value``: the
    two-sided sign test over the non-tied units; ``preferred``: the ranker preferred at
    ``alpha``, else None.
    """

    experiment: str | None
    unit: str
    wins: dict
    ties: int
    units: int
    delta: float
    p_value: float
    preferred: str | None
    clicks: dict

    def __str__(self) -> str:
        return (f"interleaving {self.experiment!r} per {self.unit}: wins " + ", ".join(
            f"{k} {v}" for k, v in self.wins.items()) + f", ties {self.ties} of {self.units}; delta {self.delta:+.3f}, "
                f"p {self.p_value:.3g}: " + (f"{self.preferred} preferred" if self.preferred else "no preference"))


def interleaving_result(store=None, experiment: str | None = None, *, unit: str = "user", alpha: float = 0.05,
                        impressions=None, events=None, since=None, until=None, windows=None,
                        outcomes=None) -> InterleavingResult:
    """Which of two interleaved rankers users prefer, from the clicks on team-drafted lists.

    ``unit``: ``"user"`` (default: a user's clicks over all their lists decide, so heavy users
    do not dominate and units are independent) or ``"request"`` (each list decides: more units,
    faster, but one user's lists are not independent).
    """
    from scipy.stats import binomtest

    if unit not in ("user", "request"):
        raise ParameterError(f"unit expected 'user' or 'request', got {unit!r}")
    alpha = _alpha(alpha)
    windows, outcomes = _windows(windows), _outcomes(outcomes)
    imps, out = _load(store, impressions, events, since, until, windows, outcomes, experiment=experiment)
    if "team" not in imps.columns:
        raise DataError("impressions: no 'team' column; expected the columns of store.impressions()")
    team = imps["team"].to_numpy(dtype=object)
    mask = np.array([isinstance(t, str) for t in team], dtype=bool)
    imps = imps[mask]
    team = team[mask]
    names = sorted(set(team.tolist()))
    if len(names) != 2:
        raise DataError(f"experiment {experiment!r} has interleaved impressions of {len(names)} ranker(s) {names}; "
                        f"expected two (is it an interleave=True experiment, and was anything shown yet?)")
    flags, _ = impression_outcomes(imps, out, windows)
    import pandas as pd

    key = imps["user"].to_numpy() if unit == "user" else imps["request_id"].to_numpy()
    credit = pd.DataFrame({"unit": key, "team": team, "clicked": flags["clicked"].to_numpy()}) \
        .pivot_table(index="unit", columns="team", values="clicked", aggfunc="sum", fill_value=0)
    credit = credit.reindex(columns=names, fill_value=0)
    a, b = credit[names[0]].to_numpy(), credit[names[1]].to_numpy()
    active = (a + b) > 0
    wins_a, wins_b = int((a > b).sum()), int((b > a).sum())
    ties = int(((a == b) & active).sum())
    units = int(active.sum())
    decided = wins_a + wins_b
    p = float(binomtest(wins_b, decided, 0.5).pvalue) if decided else float("nan")
    delta = (wins_b + ties / 2) / units - 0.5 if units else float("nan")
    preferred = None
    if p == p and p < alpha:
        preferred = names[1] if wins_b > wins_a else names[0]
    return InterleavingResult(experiment, unit, {names[0]: wins_a, names[1]: wins_b}, ties, units, float(delta), p,
                              preferred, {names[0]: int(a.sum()), names[1]: int(b.sum())})
