"""The reward model behind the direct method and the doubly robust estimators.

A generalised linear model of the reward of action ``a`` shown at position ``k`` in a round with
context ``x``::

    f(x, a, k) = b + alpha_a + gamma_k + x . beta + x . B_a

(an intercept, an action effect, a position effect, shared context effects and, with
``interactions=True``, per-action context effects: the features are ``context x action one-hot``).
``kind="logistic"`` fits ``P(reward = 1) = sigmoid(f)`` by L2-penalised maximum likelihood
(L-BFGS); ``kind="ridge"`` fits ``E[reward] = f`` by ridge regression (a Cholesky solve of the
normal equations); ``"auto"`` picks logistic for 0/1 rewards and ridge otherwise. The penalty is
``regularization / 2 * |coefficients|^2`` on every coefficient but the intercept, added to the
summed loss.

:meth:`RewardModel.cross_predict` cross-fits: the rounds are split into ``n_folds`` seeded folds and
each fold's predictions come from a model fitted on the other folds, so a round's own reward never
enters its prediction (the doubly robust estimators stay unbiased even when the model overfits).

>>> import numpy as np, persona as ps
>>> logged = ps.LoggedFeedback(action=[0, 1, 0, 1, 0, 1], reward=[1, 0, 1, 0, 1, 1], propensity=[0.5] * 6)
>>> model = ps.ope.RewardModel(kind="ridge", regularization=1e-6).fit(logged)
>>> np.round(model.predict(n_rounds=1), 3).tolist()      # no context: the per-action mean reward
[[1.0, 0.333]]
"""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING

from .._validate import check_int
from ..errors import DataError, NotFittedError, ParameterError
from ..typing import ArrayLike

if TYPE_CHECKING:  # loaded where used
    from ..marketing.logged import LoggedFeedback

__all__ = ["RewardModel"]

_KINDS = ("auto", "logistic", "ridge")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


class RewardModel:
    """Logistic or ridge regression on context x action one-hot (plus position), for DM and DR.

    Parameters
    ----------
    kind : {"auto", "logistic", "ridge"}
        ``auto``: logistic when every reward is 0 or 1, ridge otherwise.
    regularization : float
        L2 penalty (> 0) on all coefficients but the intercept.
    interactions : bool
        Per-action context coefficients (``x . B_a``); False keeps only shared context effects.
    n_folds : int
        Folds of :meth:`cross_predict` (>= 2).
    max_iter : int
        L-BFGS iterations of the logistic fit.
    random_state : int or None
        Seed of the fold assignment.

    Attributes
    ----------
    intercept_, action_coef_ (n_actions,), position_coef_ (n_positions,), context_coef_ (n_features,),
    interaction_coef_ (n_actions, n_features), kind_ : the fitted model.
    """

    def __init__(self, *, kind: str = "auto", regularization: float = 1.0, interactions: bool = True,
                 n_folds: int = 3, max_iter: int = 500, random_state: int | None = 0) -> None:
        self.kind = kind
        self.regularization = regularization
        self.interactions = interactions
        self.n_folds = n_folds
        self.max_iter = max_iter
        self.random_state = random_state

    def get_params(self) -> dict:
        return {"kind": self.kind, "regularization": self.regularization, "interactions": self.interactions,
                "n_folds": self.n_folds, "max_iter": self.max_iter, "random_state": self.random_state}

    def __repr__(self) -> str:
        return "RewardModel(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _validate(self) -> None:
        if self.kind not in _KINDS:
            raise ParameterError(f"kind must be one of {list(_KINDS)}, got {self.kind!r}")
        if not isinstance(self.regularization, (int, float)) or not self.regularization > 0:
            raise ParameterError(f"regularization must be > 0, got {self.regularization!r}")
        check_int(self.n_folds, "n_folds", min=2, expected="an integer >= 2")
        check_int(self.max_iter, "max_iter", min=1, expected="a positive integer")

    # ------------------------------------------------------------------ fitting
    @staticmethod
    def _arrays(logged):
        from ..marketing.logged import LoggedFeedback

        if not isinstance(logged, LoggedFeedback):
            raise DataError(f"expected a persona.LoggedFeedback, got {type(logged).__name__}")
        n = logged.n_rounds
        x = np.zeros((n, 0)) if logged.context is None else np.asarray(logged.context, dtype=np.float64)
        k = np.zeros(n, dtype=np.int64) if logged.position is None else np.asarray(logged.position, dtype=np.int64)
        return x, np.asarray(logged.action, dtype=np.int64), k, np.asarray(logged.reward, dtype=np.float64)

    def _design(self, x, a, k):
        """Sparse design matrix (intercept first) of rounds with context x, action a, position k."""
        import scipy.sparse as sp

        n, d = x.shape
        n_a, n_p = self.n_actions_, self.n_positions_
        rows = np.arange(n)
        blocks = [sp.csr_matrix(np.ones((n, 1))),
                  sp.csr_matrix((np.ones(n), (rows, a)), shape=(n, n_a))]
        if n_p > 1:
            blocks.append(sp.csr_matrix((np.ones(n), (rows, k)), shape=(n, n_p)))
        if d:
            xc = sp.csr_matrix(x)
            blocks.append(xc)
            if self.interactions:
                shift = np.repeat(a * d, np.diff(xc.indptr))
                blocks.append(sp.csr_matrix((xc.data, xc.indices + shift, xc.indptr), shape=(n, n_a * d)))
        return sp.hstack(blocks, format="csr")

    def _unpack(self, coef: np.ndarray, d: int) -> None:
        n_a, n_p = self.n_actions_, self.n_positions_
        at = 1
        self.intercept_ = float(coef[0])
        self.action_coef_ = coef[at:at + n_a].copy()
        at += n_a
        if n_p > 1:
            self.position_coef_ = coef[at:at + n_p].copy()
            at += n_p
        else:
            self.position_coef_ = np.zeros(n_p)
        self.context_coef_ = coef[at:at + d].copy() if d else np.zeros(0)
        at += d
        if d and self.interactions:
            self.interaction_coef_ = coef[at:at + n_a * d].reshape(n_a, d).copy()
        else:
            self.interaction_coef_ = np.zeros((n_a, d))

    def _fit_arrays(self, x, a, k, r, n_actions: int, n_positions: int) -> "RewardModel":
        self._validate()
        kind = self.kind
        if kind == "auto":
            kind = "logistic" if np.isin(r, (0.0, 1.0)).all() else "ridge"
        if kind == "logistic" and ((r < 0).any() or (r > 1).any()):
            raise DataError("kind='logistic' needs rewards in [0, 1]; use kind='ridge' for other rewards")
        self.kind_ = kind
        self.n_actions_, self.n_positions_, self.n_features_ = int(n_actions), int(n_positions), x.shape[1]
        z = self._design(x, a, k)
        dim = z.shape[1]
        pen = np.full(dim, float(self.regularization))
        pen[0] = 0.0
        if kind == "ridge":
            from scipy.linalg import cho_factor, cho_solve

            gram = (z.T @ z).toarray()
            gram[np.diag_indices(dim)] += pen
            coef = cho_solve(cho_factor(gram), np.asarray(z.T @ r).ravel())
        else:
            from scipy.optimize import minimize

            zt = z.T.tocsr()

            def loss(w):
                f = z @ w
                val = float(np.logaddexp(0.0, f).sum() - np.dot(r, f) + 0.5 * np.dot(pen * w, w))
                return val, np.asarray(zt @ (_sigmoid(f) - r)).ravel() + pen * w

            w0 = np.zeros(dim)
            m = float(np.clip(r.mean(), 1e-6, 1 - 1e-6))
            w0[0] = np.log(m / (1 - m))
            res = minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": int(self.max_iter)})
            coef = res.x
        self._unpack(np.asarray(coef, dtype=np.float64), x.shape[1])
        return self

    def fit(self, logged: LoggedFeedback) -> RewardModel:
        """Fit on all rounds of ``logged`` (a :class:`persona.LoggedFeedback`); returns self."""
        x, a, k, r = self._arrays(logged)
        return self._fit_arrays(x, a, k, r, logged.n_actions, logged.n_positions)

    # ------------------------------------------------------------------ predicting
    def _check_fitted(self) -> None:
        if not hasattr(self, "intercept_"):
            raise NotFittedError("this RewardModel is not fitted; call fit(logged) first")

    def _context(self, context, n_rounds):
        if context is None:
            if self.n_features_:
                raise DataError(f"the model was fitted with {self.n_features_} context features; pass context")
            if n_rounds is None:
                raise DataError("pass context, or n_rounds when the model has no context")
            return np.zeros((int(n_rounds), 0))
        x = np.asarray(context, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, 1) if self.n_features_ == 1 else x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.n_features_:
            raise DataError(f"context: expected (n_rounds, {self.n_features_}), got {x.shape}")
        return x

    def _linear(self, x: np.ndarray) -> np.ndarray:
        """f(x, a, k=0 effect excluded): (n, n_actions)."""
        f = self.intercept_ + self.action_coef_[None, :] + (x @ self.context_coef_)[:, None]
        if x.shape[1]:
            f = f + x @ self.interaction_coef_.T
        return f

    def _link(self, f: np.ndarray) -> np.ndarray:
        return _sigmoid(f) if self.kind_ == "logistic" else f

    def predict(self, context: ArrayLike | None = None, position: ArrayLike | None = None, *,
                n_rounds: int | None = None) -> np.ndarray:
        """Predicted reward of every action: (n_rounds, n_actions).

        ``position`` is one 0-based slot per round (default 0); ``n_rounds`` is needed only when the
        model has no context.
        """
        self._check_fitted()
        x = self._context(context, n_rounds)
        f = self._linear(x)
        if position is not None:
            k = np.asarray(position, dtype=np.int64).reshape(-1)
            if len(k) != len(x):
                raise DataError(f"position has {len(k)} entries but context has {len(x)} rows")
            if len(k) and (k.min() < 0 or k.max() >= self.n_positions_):
                raise DataError(f"position must lie in [0, {self.n_positions_}), got {int(k.min())}..{int(k.max())}")
            f = f + self.position_coef_[k][:, None]
        else:
            f = f + self.position_coef_[0]
        return self._link(f)

    def predict_all(self, context: ArrayLike | None = None, *, n_rounds: int | None = None) -> np.ndarray:
        """Predicted reward of every action at every position: (n_rounds, n_actions, n_positions)."""
        self._check_fitted()
        x = self._context(context, n_rounds)
        f = self._linear(x)[:, :, None] + self.position_coef_[None, None, :]
        return self._link(f)

    def cross_predict(self, logged: LoggedFeedback) -> np.ndarray:
        """Cross-fitted predictions for every action at each round's logged position: (n_rounds, n_actions).

        The model is refitted ``n_folds`` times (on all folds but one); the fitted attributes of
        ``self`` are left untouched. With fewer rounds than folds it fits once on everything.
        """
        self._validate()
        x, a, k, r = self._arrays(logged)
        n = len(a)
        n_actions, n_positions = logged.n_actions, logged.n_positions
        out = np.empty((n, n_actions))
        n_folds = int(self.n_folds)
        if n < n_folds:
            m = RewardModel(**self.get_params())._fit_arrays(x, a, k, r, n_actions, n_positions)
            return m.predict(x if x.shape[1] else None, k, n_rounds=n)
        fold = np.empty(n, dtype=np.int64)
        fold[np.random.default_rng(self.random_state).permutation(n)] = np.arange(n) % n_folds
        for f in range(n_folds):
            test = fold == f
            train = ~test
            m = RewardModel(**self.get_params())._fit_arrays(x[train], a[train], k[train], r[train],
                                                             n_actions, n_positions)
            out[test] = m.predict(x[test] if x.shape[1] else None, k[test], n_rounds=int(test.sum()))
        return out
