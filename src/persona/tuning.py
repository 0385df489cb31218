"""Hyperparameter search on a validation split: ``ps.tune(model, train, valid, budget=30)``.

Each model family has documented search ranges (:data:`SEARCH_SPACES`); :func:`tune` tries
``budget`` settings drawn from them, fitting on ``train`` and scoring full-ranking ``metric`` on
``valid``, and returns the best model refitted on ``train`` + ``valid``, with the table of every
trial in ``best.tuning_``. The search is Optuna's TPE sampler when Optuna is installed
(``pip install "persona-recsys[tune]"``), otherwise a seeded random search over the same ranges;
both are reproducible for a fixed ``random_state`` (and a deterministic model).

>>> import persona as ps
>>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
>>> train, valid, test = ps.split.leave_last_out(shop.interactions, new_items=True)
>>> best = ps.tune(ps.EASE(), train, valid, budget=3, random_state=0, sampler="random")
>>> len(best.tuning_), best.tuning_.columns[:2].tolist()
(3, ['trial', 'ndcg@10'])
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TypeVar

import numpy as np

from ._validate import check_int, check_number
from .errors import ParameterError

if TYPE_CHECKING:  # persona.models is loaded by ``import persona`` already; this keeps the import order free
    from .data.interactions import Interactions
    from .models.base import Recommender

RecommenderT = TypeVar("RecommenderT", bound="Recommender")

__all__ = ["tune", "Int", "Float", "Choice", "SEARCH_SPACES", "search_space"]

log = logging.getLogger("persona.tuning")


# ------------------------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Int:
    """Integers in ``[low, high]``, drawn uniformly or (``log=True``) log-uniformly."""

    low: int
    high: int
    log: bool = False

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
        return int(rng.integers(self.low, self.high + 1))

    def suggest(self, trial: Any, name: str) -> int:  # trial: an optuna.Trial
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Float:
    """Reals in ``[low, high]``, drawn uniformly or (``log=True``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Choice:
    """One of ``options``."""

    options: tuple

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))


#: the documented search ranges of each model family (class name -> parameter -> range); the
#: ranges cover what the literature and our own measurements found useful on shop-sized data
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "ALS": {"factors": Int(8, 256, log=True), "regularization": Float(1e-3, 100.0, log=True),
            "alpha": Float(0.1, 100.0, log=True), "iterations": Int(5, 30)},
    "BPR": {"factors": Int(8, 256, log=True), "learning_rate": Float(1e-3, 0.3, log=True),
            "regularization": Float(1e-5, 0.1, log=True), "iterations": Int(20, 300, log=True)},
    "ItemKNN": {"k": Int(5, 1000, log=True), "weighting": Choice(("cosine", "bm25", "tfidf", "none"))},
    "UserKNN": {"k": Int(5, 1000, log=True), "weighting": Choice(("cosine", "bm25", "tfidf", "none"))},
    "EASE": {"regularization": Float(1.0, 5000.0, log=True)},
    "MostPopular": {"half_life": Choice((None, 1.0, 3.0, 7.0, 14.0, 30.0, 90.0, 365.0))},
    "MF": {"factors": Int(4, 128, log=True), "regularization": Float(1e-3, 1.0, log=True), "iterations": Int(5, 40)},
    "SASRec": {"factors": Choice((32, 64, 128)), "blocks": Int(1, 3), "dropout": Float(0.1, 0.7),
               "learning_rate": Float(1e-4, 1e-2, log=True)},
    "ContentKNN": {"k": Int(10, 1000, log=True), "text_weight": Float(0.1, 2.0), "feature_weight": Float(0.1, 2.0),
                   "recency": Choice((None, 5.0, 20.0, 100.0))},
    "TwoTower": {"factors": Choice((32, 64, 128)), "temperature": Float(0.03, 0.5, log=True),
                 "dropout": Float(0.0, 0.5), "learning_rate": Float(1e-4, 1e-2, log=True)},
}


def search_space(model: Recommender) -> dict[str, Any]:
    """The documented search ranges of ``model``'s family (a copy, to edit and pass as ``space=``)."""
    for cls in type(model).__mro__:
        if cls.__name__ in SEARCH_SPACES:
            return dict(SEARCH_SPACES[cls.__name__])
    raise ParameterError(f"persona has no documented search ranges for {type(model).__name__}; pass "
                         "space={'param': ps.tuning.Float(low, high), ...}")


# ------------------------------------------------------------------------------------------- search
def _check_space(model, space: Mapping) -> dict:
    valid = model.get_params()
    out = {}
    for name, rng in space.items():
        if name not in valid:
            raise ParameterError(f"space names {name!r}, which {type(model).__name__} does not have; its parameters "
                                 f"are {', '.join(sorted(valid))}")
        if isinstance(rng, (list, tuple)):
            rng = Choice(tuple(rng))
        if not isinstance(rng, (Int, Float, Choice)):
            raise ParameterError(f"space[{name!r}] must be ps.tuning.Int, Float or Choice (or a list of options), "
                                 f"got {type(rng).__name__}")
        out[name] = rng
    if not out:
        raise ParameterError("space is empty; name at least one parameter to search")
    return out


def _check_metric(metric: str) -> tuple[str, int]:
    name, sep, k = str(metric).partition("@")
    if not sep or not k.isdigit() or int(k) < 1:
        raise ParameterError(f"metric must look like 'ndcg@10' (a ps.evaluate metric at a cutoff), got {metric!r}")
    return name, int(k)


def tune(model: RecommenderT, train: Interactions, valid: Interactions, *, budget: int = 30, metric: str = "ndcg@10", space: Mapping | None = None,
         refit: bool = True, sampler: str = "auto", timeout: float | None = None, random_state: int | None = 0,
         show_progress: bool = False, fit_params: Mapping[str, Any] | None = None,
         **evaluate_options: Any) -> RecommenderT:
    """Search ``model``'s hyperparameters on ``valid`` and return the best model.

    Parameters
    ----------
    model : Recommender
        An unfitted model; its current parameters are the starting point: when they lie inside the
        ranges, the first trial scores them as they are, so tuning never ends below them.
    train, valid : Interactions
        Fit on ``train``, score on ``valid`` (e.g. from :func:`persona.split.leave_last_out`).
    budget : int, default 30
        The number of settings tried (each one fit and one evaluation).
    metric : str, default "ndcg@10"
        A :func:`persona.evaluate` metric at a cutoff; higher is better.
    space : dict, optional
        Parameter -> :class:`Int` / :class:`Float` / :class:`Choice` (or a list of options);
        default the family's documented ranges (:func:`search_space`).
    refit : bool, default True
        Refit the best setting on ``train.concat(valid)`` (what you serve); else fit on ``train``.
    sampler : {"auto", "optuna", "random"}
        "auto" uses Optuna's TPE sampler when Optuna is installed, else a seeded random search.
    timeout : float, optional
        Stop starting new trials after this many seconds.
    random_state : int, optional
        Seeds the sampler (and the model, when it takes ``random_state`` and has none set).
    show_progress : bool, default False
        A progress bar over the trials.
    fit_params : dict, optional
        Keyword arguments of every ``fit`` call, the final refit included: what the model learns
        from besides the interactions (``{"item_features": feats, "item_text": names}`` for
        ContentKNN, ``{"item_features": feats}`` for TwoTower).
    **evaluate_options
        Passed to :func:`persona.evaluate` (e.g. ``exclude``, ``filter_seen``).

    Returns
    -------
    Recommender
        The best model, fitted; ``best.tuning_`` is a pandas DataFrame with one row per trial
        (``trial``, the metric, ``fit_s`` and the parameters), best first, and
        ``best.tuning_best_`` the winning parameters.
    """
    import pandas as pd

    from .evaluation import evaluate
    from .models.base import Recommender

    if not isinstance(model, Recommender):
        raise ParameterError(f"tune needs a persona model (e.g. ps.ALS()), got {type(model).__name__}")
    check_int(budget, "budget", min=1, max=10_000, expected="an int in [1, 10000] (the number of settings to try)")
    if sampler not in ("auto", "optuna", "random"):
        raise ParameterError(f"sampler must be 'auto', 'optuna' or 'random', got {sampler!r}")
    check_number(timeout, "timeout", min=0, min_open=True, finite=False, allow_none=True,
                 expected="a positive number of seconds or None")
    metric_name, k = _check_metric(metric)
    if fit_params is not None and not isinstance(fit_params, Mapping):
        raise ParameterError(f"fit_params: expected a dict of fit keyword arguments, got {type(fit_params).__name__}")
    fit_params = dict(fit_params or {})
    space = _check_space(model, space if space is not None else search_space(model))
    base = model.get_params()
    if "random_state" in base and base["random_state"] is None and random_state is not None:
        base["random_state"] = int(random_state)

    rows: list[dict] = []

    def score(params: dict) -> float:
        candidate = type(model)(**{**base, **params})
        t = time.perf_counter()
        candidate.fit(train, **fit_params)
        fit_s = time.perf_counter() - t
        report = evaluate(candidate, valid, k=(k,), **evaluate_options)
        key = f"{metric_name}@{k}"
        if key not in report:
            raise ParameterError(f"metric {metric!r} is not one ps.evaluate reports; it reports "
                                 f"{', '.join(sorted(report))}")
        value = float(report[key])
        rows.append({"trial": len(rows), key: value, "fit_s": round(fit_s, 3), **params})
        log.info("trial %d: %s=%.5f with %s", len(rows) - 1, key, value, params)
        return value

    use_optuna = sampler == "optuna" or (sampler == "auto" and _has_optuna())
    bar = _progress(budget, show_progress)
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    try:
        if use_optuna:
            _search_optuna(score, space, budget, deadline, random_state, bar, start={n: base[n] for n in space})
        else:
            _search_random(score, space, budget, deadline, random_state, bar, start={n: base[n] for n in space})
    finally:
        bar.close()

    table = pd.DataFrame(rows).sort_values(f"{metric_name}@{k}", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    best_params = {n: _plain(table.loc[0, n]) for n in space}
    best = type(model)(**{**base, **best_params})
    best.fit(train.concat(valid) if refit else train, **fit_params)
    best.tuning_ = table
    best.tuning_best_ = best_params
    return best


def _plain(v):
    """A table cell back to a plain Python value (NaN stands for None in a mixed column)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _has_optuna() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tuning", unit="trial", disable=not show)


def _search_random(score, space: dict, budget: int, deadline, random_state, bar, start: dict) -> None:
    rng = np.random.default_rng(random_state)
    first = start if all(_inside(space[n], v) for n, v in start.items()) else None
    for _ in range(budget):
        if deadline is not None and time.monotonic() > deadline and bar.n > 0:
            break
        params = first if first is not None else {name: r.sample(rng) for name, r in space.items()}
        first = None
        score(params)
        bar.update(1)


def _search_optuna(score, space: dict, budget: int, deadline, random_state, bar, start: dict) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=random_state))
    # the model's own setting first, when it lies inside the ranges: the search never ends worse
    if all(_inside(space[n], v) for n, v in start.items()):
        study.enqueue_trial(start)

    def objective(trial):
        value = score({name: r.suggest(trial, name) for name, r in space.items()})
        bar.update(1)
        return value

    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    study.optimize(objective, n_trials=budget, timeout=timeout)


def _inside(r, v) -> bool:
    if isinstance(r, Choice):
        return v in r.options
    return v is not None and not isinstance(v, bool) and r.low <= v <= r.high
