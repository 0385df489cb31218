"""Stage-2 rankers of the Hybrid: LightGBM LambdaRank (optional extra) and a logistic regression.

Both take the pair features of :mod:`persona.ranking._features` (float32, NaN for "not known") and
give a score per pair; both explain a score as per-column contributions. They save as data:
LightGBM in its own text model format, the logistic ranker as three arrays.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ArtifactError, ParameterError

log = logging.getLogger("persona.ranking")

RANKERS = ("auto", "lightgbm", "logistic")

#: ``ranker="auto"`` trains LightGBM from this many training users (groups with a positive) on, the
#: logistic ranker below: on fewer, LambdaRank's early stopping reads a held-out NDCG of a few dozen
#: users and the pointwise model ranks better (Last.fm, 525 groups; the synthetic shop, ~1,300)
AUTO_MIN_GROUPS = 2000


def lightgbm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lightgbm") is not None


def make_ranker(kind: str, params: dict | None, *, random_state, num_threads: int, n_groups: int | None = None):
    if kind == "auto":
        enough = n_groups is None or n_groups >= AUTO_MIN_GROUPS
        kind = "lightgbm" if lightgbm_available() and enough else "logistic"
        if kind == "logistic" and params:  # keep only what the logistic ranker takes
            params = {k: v for k, v in params.items() if k in ("regularization", "max_iter")}
    if kind == "lightgbm":
        if not lightgbm_available():
            raise ParameterError("ranker='lightgbm' needs LightGBM: pip install 'persona-recsys[ranking]' "
                                 "(or lightgbm), or pass ranker='logistic'")
        return LightGBMRanker(params, random_state=random_state, num_threads=num_threads)
    if kind == "logistic":
        return LogisticRanker(params)
    raise ParameterError(f"ranker: expected one of {RANKERS}, got {kind!r}")


def _split_groups(groups: np.ndarray, fraction: float, seed) -> np.ndarray:
    """A bool per group: True for the ~``fraction`` of groups held out for early stopping."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(groups)) < fraction
    if held.all() or not held.any():
        held[:] = False
    return held


class LightGBMRanker:
    """LambdaRank over the pair features, early-stopped on NDCG@10 of held-out users."""

    kind = "lightgbm"

    #: what a default fit uses; ``ranker_params`` overrides any of them
    #: (tuned on the validation targets of Amazon Beauty, Last.fm and the synthetic shop: small, slow,
    #: L2-regularised trees; the earlier 31 leaves at rate 0.05 stopped after a handful of trees on
    #: the noisy held-out NDCG of small data and ranked below the best generator alone)
    DEFAULTS = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.02,
                "num_leaves": 15, "min_data_in_leaf": 100, "lambda_l2": 10.0, "feature_fraction": 0.9,
                "bagging_fraction": 0.8, "bagging_freq": 1, "lambdarank_truncation_level": 20, "verbose": -1}
    ROUNDS = 1000
    PATIENCE = 60

    def __init__(self, params: dict | None, *, random_state, num_threads: int) -> None:
        self.params = {**self.DEFAULTS, **(params or {})}
        self.rounds = int(self.params.pop("num_boost_round", self.ROUNDS))
        self.patience = int(self.params.pop("early_stopping_rounds", self.PATIENCE))
        self.params.setdefault("seed", 0 if random_state is None else int(random_state))
        self.params.setdefault("num_threads", int(num_threads))
        self.params.setdefault("deterministic", True)
        self.params.setdefault("force_row_wise", True)
        self.booster = None

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], categorical: list[str]):
        import lightgbm as lgb

        held = _split_groups(groups, 0.1, self.params["seed"])
        row_held = np.repeat(held, groups)
        common = dict(feature_name=list(names), categorical_feature=list(categorical), free_raw_data=True)
        train = lgb.Dataset(X[~row_held], label=y[~row_held], group=groups[~held], **common)
        sets, callbacks = [train], []
        if held.any():
            valid = lgb.Dataset(X[row_held], label=y[row_held], group=groups[held], reference=train, **common)
            sets = [valid]
            callbacks = [lgb.early_stopping(self.patience, verbose=False)]
        self.booster = lgb.train(self.params, train, num_boost_round=self.rounds, valid_sets=sets,
                                 callbacks=callbacks)
        self.best_iteration = int(self.booster.best_iteration or self.booster.current_iteration())
        log.info("LightGBM ranker: %d trees (best on held-out users)", self.best_iteration)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, num_iteration=self.best_iteration, num_threads=1).astype(np.float32)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-column contribution to each row's score (SHAP values; the last column is the bias)."""
        return self.booster.predict(X, num_iteration=self.best_iteration, pred_contrib=True)

    def importance(self, names: list[str]) -> dict:
        gain = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        return dict(zip(names, (float(g) for g in gain)))

    # ------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict, dict, str]:
        text = self.booster.model_to_string(num_iteration=self.best_iteration)
        return {"kind": self.kind, "best_iteration": self.best_iteration}, {}, text

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, text: str | None, names: list[str], *, authentic: bool = False):
        if not lightgbm_available():
            raise ArtifactError("this Hybrid's ranker is LightGBM, which is not installed here: "
                                "pip install 'persona-recsys[ranking]' (or lightgbm)")
        import lightgbm as lgb

        if not isinstance(text, str) or not text.startswith("tree\n"):
            raise ArtifactError("the LightGBM ranker's model text is missing or not a LightGBM model")
        if not authentic:
            _parses_elsewhere(text, len(names))
        out = cls(None, random_state=0, num_threads=0)
        try:
            out.booster = lgb.Booster(model_str=text)
        except Exception as e:  # noqa: BLE001 - LightGBM's own parse error, whatever its type
            raise ArtifactError(f"the LightGBM ranker's model text does not parse ({e})") from None
        if out.booster.num_feature() != len(names) or out.booster.feature_name() != list(names):
            raise ArtifactError(f"the LightGBM ranker expects features {out.booster.feature_name()} but the "
                                f"Hybrid builds {names}; the artifact is inconsistent")
        out.best_iteration = int(meta.get("best_iteration", 0)) or out.booster.current_iteration()
        return out


# LightGBM parses its model text in C++, and a crafted text aborts the process that parses it
# (tests/test_artifact_attacks.py). A signed artifact's text is the shop's own; an unsigned one is
# first parsed and used, on extreme rows, in a throwaway process, and refused unless that ends cleanly.
_TRIAL = """
import sys
import numpy as np
import lightgbm as lgb
booster = lgb.Booster(model_str=sys.stdin.read())
n = int(sys.argv[1])
if booster.num_feature() != n:
    sys.exit(3)
rows = np.array([np.zeros(n), np.full(n, np.nan), np.full(n, 1e30), np.full(n, -1e30), np.arange(n) - n / 2.0])
booster.predict(rows, num_threads=1)
booster.predict(rows, pred_contrib=True, num_threads=1)
"""


def _parses_elsewhere(text: str, n_features: int) -> None:
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", _TRIAL, str(n_features)], input=text, capture_output=True,
                              text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    except subprocess.TimeoutExpired:
        raise ArtifactError("the LightGBM ranker's model text did not load within 120 s in a separate process; "
                            "the artifact is refused (sign artifacts: save(path, key=...), load(path, key=...))") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:300]
        raise ArtifactError(f"the LightGBM ranker's model text does not load cleanly ({why}); the artifact is "
                            "malformed, save the model again (or sign it: save(path, key=...), load(path, key=...))")


class LogisticRanker:
    """L2-regularised logistic regression on standardised features (missing values at the mean).

    Pointwise, so weaker than LambdaRank, but it needs only numpy and scipy; its scores explain
    exactly as ``coefficient x standardised value``. Category-code columns are left out (a code
    is not a quantity).
    """

    kind = "logistic"

    def __init__(self, params: dict | None) -> None:
        params = dict(params or {})
        self.regularization = float(params.pop("regularization", 1.0))
        self.max_iter = int(params.pop("max_iter", 200))
        if params:
            raise ParameterError(f"ranker_params for the logistic ranker: unknown {sorted(params)}; it takes "
                                 "regularization and max_iter")

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], categorical: list[str]):
        from scipy.optimize import minimize

        self.use = np.array([n not in set(categorical) for n in names], dtype=bool)
        Z = X[:, self.use].astype(np.float64)
        self.mean = np.nanmean(np.where(np.isfinite(Z), Z, np.nan), axis=0)
        self.mean = np.where(np.isfinite(self.mean), self.mean, 0.0)
        Z = self._standardise_with(Z, self.mean, None)
        self.scale = Z.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        Z /= self.scale
        A = np.column_stack([Z, np.ones(len(Z))])
        t = y.astype(np.float64)
        lam = self.regularization

        def loss(w):
            z = A @ w
            # log(1 + e^z) - t z, computed without overflow
            value = np.sum(np.logaddexp(0.0, z) - t * z) + 0.5 * lam * np.sum(w[:-1] ** 2)
            p = 0.5 * (1.0 + np.tanh(0.5 * z))
            grad = A.T @ (p - t)
            grad[:-1] += lam * w[:-1]
            return value, grad

        res = minimize(loss, np.zeros(A.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.coef = res.x[:-1].astype(np.float64)
        self.bias = float(res.x[-1])
        return self

    @staticmethod
    def _standardise_with(Z, mean, scale):
        Z = np.where(np.isfinite(Z), Z, mean[None, :])
        return Z if scale is None else (Z - mean[None, :]) / scale[None, :]

    def _z(self, X):
        return self._standardise_with(X[:, self.use].astype(np.float64), self.mean, self.scale)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self._z(X) @ self.coef + self.bias).astype(np.float32)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(self.use) + 1))
        out[:, np.flatnonzero(self.use)] = self._z(X) * self.coef[None, :]
        out[:, -1] = self.bias
        return out

    def importance(self, names: list[str]) -> dict:
        full = np.zeros(len(names))
        full[self.use] = np.abs(self.coef)
        return dict(zip(names, full.tolist()))

    # ------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict, dict, None]:
        meta = {"kind": self.kind, "bias": self.bias, "regularization": self.regularization}
        arrays = {"rk_use": self.use, "rk_mean": self.mean, "rk_scale": self.scale, "rk_coef": self.coef}
        return meta, arrays, None

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, text, names: list[str]):
        out = cls({"regularization": float(meta.get("regularization", 1.0))})
        use = np.asarray(arrays["rk_use"])
        if use.dtype != bool or use.shape != (len(names),):
            raise ArtifactError(f"rk_use: expected {len(names)} booleans, got {use.shape} {use.dtype}")
        k = int(use.sum())
        for name in ("rk_mean", "rk_scale", "rk_coef"):
            a = np.asarray(arrays[name])
            if a.shape != (k,) or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ArtifactError(f"{name}: expected {k} finite floats, got {a.shape} {a.dtype}")
        if not (np.asarray(arrays["rk_scale"]) > 0).all():
            raise ArtifactError("rk_scale: expected positive scales")
        out.use, out.mean, out.scale, out.coef = use, arrays["rk_mean"], arrays["rk_scale"], arrays["rk_coef"]
        out.bias = float(meta["bias"])
        if not np.isfinite(out.bias):
            raise ArtifactError("the logistic ranker's bias is not finite")
        return out


def ranker_from_state(meta: dict, arrays: dict, text, names: list[str], *, authentic: bool = False):
    kind = meta.get("kind")
    if kind == "lightgbm":
        return LightGBMRanker.from_state(meta, arrays, text, names, authentic=authentic)
    if kind == "logistic":
        return LogisticRanker.from_state(meta, arrays, text, names)
    raise ArtifactError(f"unknown ranker kind {kind!r}; upgrade persona or check the artifact")
