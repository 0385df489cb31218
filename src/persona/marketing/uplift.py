r"""Uplift models: whom does a campaign message *change*, not who buys.

A response model ranks users by :math:`P(\text{buy} \mid \text{messaged})` and sends to the top --
mostly to loyal customers who would have bought anyway ("sure things"), each of whom then costs the
discount; and it cannot see the customers a message puts off ("sleeping dogs"). An uplift model
estimates the *treatment effect* :math:`\tau(x) = P(y \mid x, \text{messaged}) - P(y \mid x, \text{not})`
from randomised data -- the held-out control groups the :class:`~persona.marketing.Planner` keeps
(``holdout=``) and :class:`~persona.marketing.FeedbackRecorder` logs -- and the planner then
targets by predicted uplift times margin (``Planner(uplift=...)``).

Learners (scikit-learn style: ``fit(X, treatment, outcome)`` then ``predict(X)`` -> uplift):

* :class:`TLearner` -- two outcome models, treated and control: :math:`\hat\tau = \hat\mu_1 - \hat\mu_0`.
* :class:`XLearner` (Künzel et al., PNAS 2019) -- impute each treated user's effect as
  :math:`y - \hat\mu_0(x)` and each control user's as :math:`\hat\mu_1(x) - y`, fit one effect model
  per group, blend them with the propensity: :math:`\hat\tau = e\,\hat\tau_0 + (1 - e)\,\hat\tau_1`.
* :class:`DRLearner` (Kennedy 2020) -- cross-fitted outcome models and propensity, the doubly robust
  pseudo-outcome :math:`\phi = \hat\mu_1 - \hat\mu_0 + t\,(y - \hat\mu_1)/e - (1 - t)(y - \hat\mu_0)/(1 - e)`,
  regressed on :math:`x`.

Base learners: LightGBM (``"lightgbm"``, the ``"auto"`` choice when installed), scikit-learn's
histogram gradient boosting or logistic / ridge regression, or any scikit-learn-style estimator
(cloned for each model). A binary outcome is modelled with a classifier's probabilities, anything
else with a regressor; effect models are always regressors.

Metrics (arguments in scikit-uplift's order ``(outcome, uplift, treatment)``; the tests check them
against scikit-uplift): :func:`uplift_curve`, :func:`qini_curve`, :func:`auuc`, :func:`qini_auc`,
:func:`uplift_at_k`. Curves are evaluated at every distinct predicted uplift (ties move together),
with the users sorted by predicted uplift, best first:

* uplift curve at the top ``n``: :math:`(\bar y_t - \bar y_c)\, n` (the response rates of the treated
  and the control users among them);
* Qini curve at the top ``n``: :math:`Y_t - Y_c\, N_t / N_c` (responders, scaled by the group sizes);
* :func:`auuc` / :func:`qini_auc`: the area between the curve and the random-targeting line (from
  the origin to the curve's end), over that of the best possible ordering (1: perfect, 0: random).

:func:`uplift_data` turns the logged feedback (sends and holdouts, conversions) into a training
table; :class:`UpliftScorer` turns a fitted learner and user features into the planner's
``uplift(campaign, users, items)`` callable.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError
from ..typing import ArrayLike

if TYPE_CHECKING:  # annotations only
    import pandas as pd

    from .campaigns import Campaign

__all__ = ["TLearner", "XLearner", "DRLearner", "UpliftScorer", "uplift_data", "uplift_curve", "qini_curve",
           "auuc", "qini_auc", "uplift_at_k", "LEARNERS"]

#: Base learners named by a string.
LEARNERS = ("auto", "lightgbm", "hist_gradient_boosting", "linear")


# ---------------------------------------------------------------------------------------------- base learners
class _LightGBM:
    """A LightGBM model through its native API (no scikit-learn needed): binary or regression."""

    def __init__(self, objective: str, random_state: int, num_threads: int, params: Mapping | None) -> None:
        self.objective = objective
        self.params = {"objective": objective, "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 40,
                       "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
                       "verbose": -1, "seed": random_state, "num_threads": num_threads, **(params or {})}
        self.rounds = int(self.params.pop("num_boost_round", 200))

    def fit(self, X, y):
        import lightgbm as lgb

        self.booster_ = lgb.train(self.params, lgb.Dataset(X, label=y), num_boost_round=self.rounds)
        return self

    def predict(self, X):
        return self.booster_.predict(X)


def _make(learner, kind: str, random_state: int, num_threads: int, params: Mapping | None):
    """A fresh base model: ``kind`` is "classifier" (probabilities of a 0/1 outcome) or "regressor"."""
    if isinstance(learner, str):
        if learner not in LEARNERS:
            raise ParameterError(f"uplift learner: expected one of {LEARNERS} or a scikit-learn-style estimator, got "
                                 f"{learner!r}")
        if learner == "auto":
            learner = "lightgbm" if importlib.util.find_spec("lightgbm") else "hist_gradient_boosting"
        if learner == "lightgbm":
            if importlib.util.find_spec("lightgbm") is None:
                raise ParameterError("uplift learner 'lightgbm' needs LightGBM: pip install 'persona-recsys[uplift]'"
                                     " (or lightgbm), or pass learner='hist_gradient_boosting'")
            return _LightGBM("binary" if kind == "classifier" else "regression", random_state, num_threads, params)
        if importlib.util.find_spec("sklearn") is None:
            raise ParameterError(f"uplift learner {learner!r} needs scikit-learn: pip install "
                                 "'persona-recsys[uplift]' (or scikit-learn), or pass learner='lightgbm'")
        if learner == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

            cls = HistGradientBoostingClassifier if kind == "classifier" else HistGradientBoostingRegressor
            return cls(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
                       random_state=random_state, **(params or {}))
        from sklearn.linear_model import LogisticRegression, Ridge

        return LogisticRegression(max_iter=2000, **(params or {})) if kind == "classifier" \
            else Ridge(alpha=1.0, **(params or {}))
    if not callable(getattr(learner, "fit", None)) or not callable(getattr(learner, "predict", None)):
        raise ParameterError(f"uplift learner: expected a name from {LEARNERS} or an estimator with fit and predict, "
                             f"got {type(learner).__name__}")
    try:
        from sklearn.base import clone

        return clone(learner)
    except (ImportError, TypeError):  # not a scikit-learn estimator: an unfitted copy will do
        return copy.deepcopy(learner)


def _predict(model, X, kind: str) -> np.ndarray:
    if kind == "classifier" and not isinstance(model, _LightGBM) and callable(getattr(model, "predict_proba", None)):
        out = np.asarray(model.predict_proba(X))
        return out[:, -1].astype(np.float64) if out.ndim == 2 else out.astype(np.float64)
    return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------------------------------------- checks
def _features(X, what: str = "X") -> np.ndarray:
    if hasattr(X, "select_dtypes") and hasattr(X, "columns"):  # pandas: numeric columns only
        bad = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
        if bad:
            raise DataError(f"{what}: expected numeric feature columns, got non-numeric {bad[:5]}; encode them first "
                            "(e.g. pd.get_dummies)")
        X = X.to_numpy(dtype=np.float64)
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: expected a numeric 2-D array or DataFrame of features, got "
                        f"{type(X).__name__}") from None
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D array (users x features), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise DataError(f"{what}: infinite feature values; clip or drop them (NaN is allowed for missing)")
    return arr


def _binary(v, n: int, what: str) -> np.ndarray:
    a = np.asarray(v).reshape(-1)
    if len(a) != n:
        raise DataError(f"{what}: expected one value per row ({n}), got {len(a)}")
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
        raise DataError(f"{what}: expected 0/1 (or bool) values, got {np.unique(a)[:5].tolist()}; mark treated "
                        "(messaged) rows 1 and control (held-out) rows 0")
    return a.astype(np.int64)


def _outcome(v, n: int) -> tuple[np.ndarray, bool]:
    try:
        y = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"outcome: expected numbers (0/1 conversions, or revenue), got {type(v).__name__}") from None
    if len(y) != n:
        raise DataError(f"outcome: expected one value per row ({n}), got {len(y)}")
    if not np.isfinite(y).all():
        raise DataError("outcome: expected finite values, got NaN or infinity; fill or drop those rows")
    return y, bool(np.isin(y, (0.0, 1.0)).all())


def _propensity(p, t: np.ndarray, clip: float) -> np.ndarray:
    """P(treated) per row: given (a number or one per row), else the treated share (randomised data)."""
    if p is None:
        e = np.full(len(t), t.mean())
    else:
        e = np.broadcast_to(np.asarray(p, dtype=np.float64), t.shape).astype(np.float64) \
            if np.ndim(p) == 0 else np.asarray(p, dtype=np.float64).reshape(-1)
        if e.shape != t.shape or not np.isfinite(e).all() or (e <= 0).any() or (e >= 1).any():
            raise DataError(f"propensity: expected P(treated) strictly between 0 and 1, one number or one per row "
                            f"({len(t)}), got {np.asarray(p).shape if np.ndim(p) else p!r}")
    return np.clip(e, clip, 1.0 - clip)


class _Uplift:
    """Shared argument handling of the learners."""

    _min_group = 2

    def _check_fit(self, X, treatment, outcome):
        X = _features(X)
        t = _binary(treatment, len(X), "treatment")
        y, binary = _outcome(outcome, len(X))
        n1, n0 = int(t.sum()), int(len(t) - t.sum())
        if min(n1, n0) < self._min_group:
            raise DataError(f"{type(self).__name__}.fit: expected treated and control rows (at least "
                            f"{self._min_group} each), got {n1} treated and {n0} control; uplift needs a randomised "
                            "control group (Planner(holdout=...))")
        self.random_state_ = check_int(self.random_state, f"{type(self).__name__}: random_state", min=0)
        self.num_threads_ = check_int(self.num_threads, f"{type(self).__name__}: num_threads", min=0)
        self.binary_ = binary
        self.n_features_in_ = X.shape[1]
        return X, t, y

    def _new(self, learner, kind: str, offset: int = 0):
        return _make(learner, kind, self.random_state_ + offset, self.num_threads_, self.params)

    def _check_predict(self, X) -> np.ndarray:
        if getattr(self, "n_features_in_", None) is None:
            from ..errors import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, treatment, outcome)")
        X = _features(X)
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"{type(self).__name__}.predict: expected {self.n_features_in_} features (as in fit), got "
                            f"{X.shape[1]}")
        return X

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.endswith("_"))
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------------- learners
class TLearner(_Uplift):
    """Two outcome models, one on the treated and one on the control rows; uplift is their difference.

    Parameters
    ----------
    learner : str or estimator, default "auto"
        ``"lightgbm"``, ``"hist_gradient_boosting"``, ``"linear"`` (logistic / ridge regression), or a
        scikit-learn-style estimator (cloned for each model); ``"auto"``: LightGBM when installed.
    params : dict, optional
        Extra parameters of the named learner (LightGBM's, or the scikit-learn class's).
    random_state, num_threads : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(4000, 2)); t = rng.integers(0, 2, 4000)
    >>> y = (rng.random(4000) < 0.1 + 0.2 * t * (X[:, 0] > 0)).astype(int)   # only x0 > 0 responds
    >>> m = TLearner("linear").fit(X, t, y)
    >>> bool(m.predict([[1.5, 0.0]])[0] > m.predict([[-1.5, 0.0]])[0])
    True
    """

    def __init__(self, learner: Any = "auto", *, params: Mapping | None = None, random_state: int = 0,
                 num_threads: int = 0) -> None:
        self.learner = learner
        self.params = params
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, X: ArrayLike, treatment: ArrayLike, outcome: ArrayLike) -> "TLearner":
        """Fit on features ``X``, 0/1 ``treatment`` and ``outcome`` (0/1 conversions or a value); returns ``self``."""
        X, t, y = self._check_fit(X, treatment, outcome)
        kind = "classifier" if self.binary_ else "regressor"
        self.kind_ = kind
        self.model_treated_ = self._new(self.learner, kind, 0).fit(X[t == 1], y[t == 1])
        self.model_control_ = self._new(self.learner, kind, 1).fit(X[t == 0], y[t == 0])
        return self

    def predict_outcomes(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(mu0, mu1)``: predicted outcome without and with the message."""
        X = self._check_predict(X)
        return _predict(self.model_control_, X, self.kind_), _predict(self.model_treated_, X, self.kind_)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted uplift ``mu1 - mu0`` per row."""
        mu0, mu1 = self.predict_outcomes(X)
        return mu1 - mu0


class XLearner(_Uplift):
    """The X-learner (Künzel, Sekhon, Bickel & Yu 2019): imputed effects, one effect model per group.

    Parameters
    ----------
    learner : str or estimator, default "auto"
        The outcome models (as :class:`TLearner`).
    effect_learner : str or estimator, default "auto"
        The effect models (regressors).
    propensity : float, optional
        P(treated) of the randomisation (e.g. 0.9 with a 10% holdout); default the treated share
        of the data.
    params, random_state, num_threads
        As :class:`TLearner`.
    """

    def __init__(self, learner: Any = "auto", *, effect_learner: Any = "auto", propensity: float | None = None,
                 params: Mapping | None = None, random_state: int = 0, num_threads: int = 0) -> None:
        self.learner = learner
        self.effect_learner = effect_learner
        self.propensity = propensity
        self.params = params
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, X: ArrayLike, treatment: ArrayLike, outcome: ArrayLike) -> "XLearner":
        """Fit on features, 0/1 treatment and outcome; returns ``self``."""
        X, t, y = self._check_fit(X, treatment, outcome)
        e = t.mean() if self.propensity is None else check_number(
            self.propensity, "XLearner: propensity", min=0.0, max=1.0, min_open=True, max_open=True,
            hint="the randomisation's P(treated), e.g. 0.9 with a 10% holdout; per-row propensities need DRLearner")
        self.propensity_ = float(np.clip(e, 1e-3, 1.0 - 1e-3))
        kind = "classifier" if self.binary_ else "regressor"
        self.kind_ = kind
        t1, t0 = t == 1, t == 0
        mu1 = self._new(self.learner, kind, 0).fit(X[t1], y[t1])
        mu0 = self._new(self.learner, kind, 1).fit(X[t0], y[t0])
        d1 = y[t1] - _predict(mu0, X[t1], kind)  # what the message added for the treated
        d0 = _predict(mu1, X[t0], kind) - y[t0]  # what it would have added for the control
        self.effect_treated_ = self._new(self.effect_learner, "regressor", 2).fit(X[t1], d1)
        self.effect_control_ = self._new(self.effect_learner, "regressor", 3).fit(X[t0], d0)
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted uplift ``e * tau0 + (1 - e) * tau1`` per row."""
        X = self._check_predict(X)
        e = self.propensity_
        return e * _predict(self.effect_control_, X, "regressor") + (1.0 - e) * _predict(self.effect_treated_, X,
                                                                                         "regressor")


class DRLearner(_Uplift):
    """The doubly robust learner (Kennedy 2020): cross-fitted nuisances, the DR pseudo-outcome regressed on x.

    Parameters
    ----------
    learner : str or estimator, default "auto"
        The outcome models (as :class:`TLearner`).
    effect_learner : str or estimator, default "auto"
        The final regression of the pseudo-outcome.
    propensity : float or None, default None
        P(treated) of the randomisation; or pass one per row to :meth:`fit`. Default: the treated
        share of the data (randomised holdouts).
    n_folds : int, default 2
        Cross-fitting folds: each row's outcome models never saw it.
    clip : float, default 0.01
        Propensities are clipped to ``[clip, 1 - clip]``.
    params, random_state, num_threads
        As :class:`TLearner`.
    """

    def __init__(self, learner: Any = "auto", *, effect_learner: Any = "auto", propensity: float | None = None,
                 n_folds: int = 2, clip: float = 0.01, params: Mapping | None = None, random_state: int = 0,
                 num_threads: int = 0) -> None:
        self.learner = learner
        self.effect_learner = effect_learner
        self.propensity = propensity
        self.n_folds = n_folds
        self.clip = clip
        self.params = params
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, X: ArrayLike, treatment: ArrayLike, outcome: ArrayLike,
            propensity: ArrayLike | None = None) -> "DRLearner":
        """Fit on features, 0/1 treatment, outcome and optionally P(treated) per row; returns ``self``."""
        X, t, y = self._check_fit(X, treatment, outcome)
        folds = check_int(self.n_folds, "DRLearner: n_folds", min=2, max=20)
        clip = check_number(self.clip, "DRLearner: clip", min=0.0, max=0.5, min_open=True, max_open=True)
        e = _propensity(self.propensity if propensity is None else propensity, t, clip)
        kind = "classifier" if self.binary_ else "regressor"
        self.kind_ = kind
        fold = np.random.default_rng(self.random_state_).permutation(len(t)) % folds
        mu0, mu1 = np.zeros(len(t)), np.zeros(len(t))
        for f in range(folds):
            fit_rows, out = fold != f, fold == f
            for arm, mu, off in ((1, mu1, 0), (0, mu0, 1)):
                rows = fit_rows & (t == arm)
                if rows.sum() < self._min_group:
                    raise DataError(f"DRLearner.fit: a cross-fitting fold has fewer than {self._min_group} "
                                    f"{'treated' if arm else 'control'} rows; lower n_folds or add data")
                mu[out] = _predict(self._new(self.learner, kind, 2 * f + off).fit(X[rows], y[rows]), X[out], kind)
        self.pseudo_outcome_ = mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1.0 - e)
        self.effect_ = self._new(self.effect_learner, "regressor", 100).fit(X, self.pseudo_outcome_)
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted uplift per row."""
        return _predict(self.effect_, self._check_predict(X), "regressor")


# ---------------------------------------------------------------------------------------------- metrics
def _metric_args(outcome, uplift, treatment, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = np.asarray(uplift, dtype=np.float64).reshape(-1)
    y, _ = _outcome(outcome, len(u))
    t = _binary(treatment, len(u), f"{what}: treatment")
    if not np.isfinite(u).all():
        raise DataError(f"{what}: expected finite predicted uplifts, got NaN or infinity")
    if len(u) == 0:
        raise DataError(f"{what}: expected at least one row, got none")
    return y, u, t


def _cumulative(y, u, t):
    """At every distinct uplift (best first): rows so far, treated / control rows and their outcomes."""
    order = np.argsort(-u, kind="stable")
    y, u, t = y[order], u[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(u) != 0), len(u) - 1]  # the last row of each run of equal uplift
    n_t, n_c = np.cumsum(t)[last], np.cumsum(1 - t)[last]
    y_t, y_c = np.cumsum(y * t)[last], np.cumsum(y * (1 - t))[last]
    return (last + 1).astype(np.float64), n_t.astype(np.float64), n_c.astype(np.float64), y_t, y_c


def _from_origin(x, v):
    if x[0] != 0 or v[0] != 0:
        x, v = np.r_[0.0, x], np.r_[0.0, v]
    return x, v


def uplift_curve(outcome: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(n, value)``: at the top ``n`` users by predicted uplift, ``(mean y_treated - mean y_control) * n``.

    Starts at ``(0, 0)``; a group absent from the top counts as a mean of 0.

    Examples
    --------
    >>> n, v = uplift_curve([1, 0, 0, 1], [0.9, 0.5, 0.3, 0.1], [1, 0, 1, 0])
    >>> n.tolist(), v.tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 1.5, 0.0])
    """
    y, u, t = _metric_args(outcome, uplift, treatment, "uplift_curve")
    n, n_t, n_c, y_t, y_c = _cumulative(y, u, t)
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return _from_origin(n, (rate_t - rate_c) * n)


def qini_curve(outcome: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(n, value)``: at the top ``n`` users, treated responders minus control responders scaled by
    ``N_treated / N_control`` (Radcliffe 2007). Starts at ``(0, 0)``.

    Examples
    --------
    >>> n, v = qini_curve([1, 0, 0, 1], [0.9, 0.5, 0.3, 0.1], [1, 0, 1, 0])
    >>> v.tolist()
    [0.0, 1.0, 1.0, 1.0, 0.0]
    """
    y, u, t = _metric_args(outcome, uplift, treatment, "qini_curve")
    n, n_t, n_c, y_t, y_c = _cumulative(y, u, t)
    return _from_origin(n, y_t - y_c * np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0))


def _trapezoid(x, v) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2.0))


def _normalised(curve, perfect) -> float:
    x, v = curve
    px, pv = perfect
    base = _trapezoid(np.array([0.0, px[-1]]), np.array([0.0, pv[-1]]))
    best = _trapezoid(px, pv) - base
    if best == 0:
        return float("nan")
    return (_trapezoid(x, v) - base) / best


def auuc(outcome: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised area under the uplift curve: 0 for random targeting, 1 for the best ordering.

    The best ordering puts first the rows that make uplift -- treated responders and control
    non-responders -- then, of the rest, control responders last when they outnumber treated
    non-responders (else treated rows before control rows). (scikit-uplift's ``uplift_auc_score``.)

    Examples
    --------
    >>> round(auuc([1, 0, 0, 1], [0.9, 0.5, 0.3, 0.1], [1, 0, 1, 0]), 3)
    1.0
    """
    y, u, t = _metric_args(outcome, uplift, treatment, "auuc")
    control_responders = int(((y == 1) & (t == 0)).sum())
    treated_non = int(((y == 0) & (t == 1)).sum())
    best = 2.0 * (y == t) + (y if control_responders > treated_non else t)
    return _normalised(uplift_curve(y, u, t), uplift_curve(y, best, t))


def qini_auc(outcome: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, *, negative_effect: bool = True) -> float:
    """Normalised area under the Qini curve (the Qini coefficient): 0 random, 1 the best ordering.

    With ``negative_effect`` (the default) the best ordering is treated responders first and control
    responders last (a message can put customers off); without, the best curve climbs straight to
    the overall incremental responders and stays there. (scikit-uplift's ``qini_auc_score``.)

    Examples
    --------
    >>> qini_auc([1, 0, 0, 1], [0.9, 0.5, 0.3, 0.1], [1, 0, 1, 0])        # the best ordering
    1.0
    >>> qini_auc([1, 0, 0, 1], [0.1, 0.3, 0.5, 0.9], [1, 0, 1, 0]) < 0      # the worst: below random
    True
    """
    y, u, t = _metric_args(outcome, uplift, treatment, "qini_auc")
    if negative_effect:
        perfect = qini_curve(y, y * t - y * (1 - t), t)
    else:
        n_t, n_c = t.sum(), (1 - t).sum()
        top = float((y * t).sum() - n_t * ((y * (1 - t)).sum() / n_c if n_c else 0.0))
        perfect = (np.array([0.0, top, len(y)]), np.array([0.0, top, top]))
    return _normalised(qini_curve(y, u, t), perfect)


def uplift_at_k(outcome: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float | int = 0.3, *,
                strategy: str = "overall") -> float:
    """Treated minus control response rate among the top ``k`` users by predicted uplift.

    ``k``: a share in (0, 1) or a count. ``strategy="overall"``: the top ``k`` of all rows (``int(k * n)``
    for a share), then the two rates within them; ``"by_group"``: the top ``k`` of the treated and the
    top ``k`` of the control rows separately. Ties in predicted uplift keep the rows' order.

    Examples
    --------
    >>> uplift_at_k([1, 0, 0, 1], [0.9, 0.5, 0.3, 0.1], [1, 0, 1, 0], k=2)
    1.0
    """
    y, u, t = _metric_args(outcome, uplift, treatment, "uplift_at_k")
    if strategy not in ("overall", "by_group"):
        raise ParameterError(f"uplift_at_k: strategy: expected 'overall' or 'by_group', got {strategy!r}")
    n = len(y)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise ParameterError(f"uplift_at_k: k: expected a share in (0, 1) or a count, got {k!r}")
    share = isinstance(k, (float, np.floating))
    if share and not 0 < k < 1:
        raise ParameterError(f"uplift_at_k: k: expected a share strictly between 0 and 1, got {k!r}")
    if not share:
        k = check_int(k, "uplift_at_k: k", min=1, max=n - 1 if strategy == "overall" else n)
    order = np.argsort(-u, kind="stable")
    ys, ts = y[order], t[order]
    if strategy == "overall":
        top = int(n * k) if share else k
        yt, tt = ys[:top], ts[:top]
        if not tt.any() or tt.all():
            raise DataError(f"uplift_at_k: the top {top} rows hold only {'treated' if tt.any() else 'control'} rows; "
                            "raise k or use strategy='by_group'")
        return float(yt[tt == 1].mean() - yt[tt == 0].mean())
    y1, y0 = ys[ts == 1], ys[ts == 0]
    k1, k0 = (int(len(y1) * k), int(len(y0) * k)) if share else (k, k)
    if k1 < 1 or k0 < 1 or k1 > len(y1) or k0 > len(y0):
        raise DataError(f"uplift_at_k: k={k} picks {k1} of {len(y1)} treated and {k0} of {len(y0)} control rows; "
                        "pick at least one and at most all of each")
    return float(y1[:k1].mean() - y0[:k0].mean())


# ---------------------------------------------------------------------------------------------- logged data
def uplift_data(events: Any, features: pd.DataFrame | None = None, *, campaign: str | None = None) -> pd.DataFrame:
    """The randomised experiments in logged campaign feedback, one row per planned message.

    Every message the planner chose was sent (``treatment`` 1) or, at random, held out as control
    (``treatment`` 0; :class:`~persona.marketing.Holdout`); :class:`~persona.marketing.FeedbackRecorder`
    logged both and their conversions. Campaigns without a holdout are left out (no control, no
    uplift).

    Parameters
    ----------
    events : EventStore or DataFrame
        A store, or ``store.events()``.
    features : pandas.DataFrame, optional
        Indexed by user id: joined onto the rows (users without features get NaN).
    campaign : str, optional
        One campaign only.

    Returns
    -------
    pandas.DataFrame
        ``message_id`` (index), ``user``, ``campaign``, ``offer``, ``channel``, ``treatment`` (0/1),
        ``converted`` (0/1), ``revenue``, ``p_treatment`` (the campaign's share of sent messages:
        the randomisation's P(treated)), then the feature columns.

    Examples
    --------
    >>> import os, tempfile
    >>> from persona.store import EventStore
    >>> from persona.marketing import FeedbackRecorder, Holdout, Message
    >>> with EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
    ...     rec = FeedbackRecorder(store)
    ...     sent = Message("m1", "ann", "spring", "email", send_at=1714557600.0, subject="", text="")
    ...     held = Holdout("m2", "bob", "spring", "email", send_at=1714557600.0, propensity=0.5, p_convert=0.1)
    ...     _ = rec.sent(sent); _ = rec.held_out(held); _ = rec.converted(held, value=20.0)
    ...     store.flush()
    ...     table = uplift_data(store)
    >>> table[["user", "treatment", "converted"]].values.tolist()
    [['ann', 1, 0], ['bob', 0, 1]]
    """
    import pandas as pd

    from .feedback import _frame

    ev = _frame(events)
    props = [p if isinstance(p, dict) else {} for p in ev["properties"].tolist()]
    mids = [p.get("message_id") for p in props]
    if any(m is None for m in mids):
        raise DataError("uplift_data: feedback events without a 'message_id' property; record them with "
                        "FeedbackRecorder")
    kind = ev["event"].to_numpy()
    value = ev["value"].to_numpy(dtype=np.float64) if "value" in ev.columns else np.zeros(len(ev))
    users = ev["user"].to_numpy() if "user" in ev.columns else np.full(len(ev), None)
    planned = {}
    for m, k, u, p in zip(mids, kind, users, props):
        if k in ("send", "holdout") and (m not in planned or k == "send"):
            planned[m] = {"message_id": m, "user": u, "campaign": p.get("campaign", ""), "offer": p.get("offer", ""),
                          "channel": p.get("channel", ""), "treatment": int(k == "send")}
    conv = pd.DataFrame({"message_id": mids, "conv": kind == "conversion",
                         "revenue": np.where((kind == "conversion") & np.isfinite(value), value, 0.0)})
    got = conv.groupby("message_id").agg(converted=("conv", "any"), revenue=("revenue", "sum"))
    cols = ["message_id", "user", "campaign", "offer", "channel", "treatment"]
    table = pd.DataFrame(list(planned.values()), columns=cols).set_index("message_id")
    if campaign is not None:
        table = table[table["campaign"] == campaign]
    table = table.join(got)
    table["converted"] = table["converted"].fillna(False).astype(np.int64)
    table["revenue"] = table["revenue"].fillna(0.0).astype(np.float64)
    share = table.groupby("campaign")["treatment"].transform("mean")
    table["p_treatment"] = share.astype(np.float64)
    table = table[(share > 0) & (share < 1)]  # a campaign without a holdout (or without sends) has no contrast
    if features is not None:
        if not hasattr(features, "index") or not hasattr(features, "columns"):
            raise ParameterError(f"uplift_data: features: expected a DataFrame indexed by user id, got "
                                 f"{type(features).__name__}")
        clash = [c for c in features.columns if c in table.columns]
        if clash:
            raise ParameterError(f"uplift_data: features: columns {clash} clash with the table's; rename them")
        table = table.join(features, on="user")
    return table


class UpliftScorer:
    """The planner's ``uplift(campaign, users, items)``: a fitted learner's predictions from user features.

    Parameters
    ----------
    learner : fitted uplift learner, or dict
        Anything with ``predict(X) -> uplift``; or a dict keyed by campaign name or offer kind
        (``"discount"``), with ``"*"`` for the rest, for one learner per campaign or offer.
    features : pandas.DataFrame
        Indexed by user id, the columns the learner was fitted on (in that order).
    unknown : float, default 0.0
        Uplift of users without features.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> class Half:  # a stand-in learner: half of the first feature
    ...     def predict(self, X):
    ...         return np.asarray(X)[:, 0] / 2
    >>> feats = pd.DataFrame({"x": [0.2, 0.4]}, index=["ann", "bob"])
    >>> UpliftScorer(Half(), feats)(None, ["bob", "eve"], []).tolist()
    [0.2, 0.0]
    """

    def __init__(self, learner: Any, features: pd.DataFrame, *, unknown: float = 0.0) -> None:
        if not hasattr(features, "index") or not hasattr(features, "columns"):
            raise ParameterError(f"UpliftScorer: features: expected a DataFrame indexed by user id, got "
                                 f"{type(features).__name__}")
        learners = learner if isinstance(learner, Mapping) else {"*": learner}
        for name, m in learners.items():
            if not callable(getattr(m, "predict", None)):
                raise ParameterError(f"UpliftScorer: learner {name!r}: expected a fitted uplift learner with predict, "
                                     f"got {type(m).__name__}")
        from ..data.idmap import IdMap

        self.learners = dict(learners)
        self.features = features
        self.unknown = check_number(unknown, "UpliftScorer: unknown", min=-1.0, max=1.0)
        self._map = IdMap(features.index.to_numpy())
        self._X = _features(features, "UpliftScorer: features")

    def learner_for(self, campaign: Campaign | str | None) -> Any:
        """The learner of ``campaign``: by its name, else its offer kind, else ``"*"``."""
        name = getattr(campaign, "name", campaign)
        offer = getattr(getattr(campaign, "offer", None), "kind", None)
        for key in (name, offer, "*"):
            if key in self.learners:
                return self.learners[key]
        raise ParameterError(f"UpliftScorer: no learner for campaign {name!r} (offer {offer!r}); add one, or a '*' "
                             f"default (have {sorted(map(str, self.learners))})")

    def __call__(self, campaign: Campaign | str | None, users, items) -> np.ndarray:
        pos = self._map.lookup(users) if len(users) else np.zeros(0, np.int64)
        out = np.full(len(pos), self.unknown, dtype=np.float64)
        if (pos >= 0).any():
            out[pos >= 0] = np.asarray(self.learner_for(campaign).predict(self._X[pos[pos >= 0]]),
                                       dtype=np.float64).reshape(-1)
        return out

