"""Contextual bandits that learn which offer (item, coupon, channel) to show from feedback.

Three policies over ``n_actions`` actions, all linear in the round's context ``x`` (plus a constant
feature with ``fit_intercept=True``), with one ridge regression per action (disjoint model)::

    precision[a] = regularization * I + sum x x^T   over the rounds where a was shown
    theta[a]     = precision[a]^-1 sum reward * x

- :class:`LinUCB` (Li et al. 2010): shows ``argmax_a theta[a] . x + alpha * sqrt(x^T precision[a]^-1 x)``.
- :class:`LinearThompsonSampling` (Agrawal and Goyal 2013): draws a score per action from the
  Gaussian posterior ``N(theta[a] . x, scale^2 x^T precision[a]^-1 x)`` and shows the largest.
- :class:`EpsilonGreedy`: shows ``argmax_a theta[a] . x`` with probability ``1 - epsilon``, a uniform
  action otherwise (the baseline).

Every policy returns, with each choice, its exact probability (the *propensity* to log so that the
policy itself can be evaluated or replaced off-policy later):

- EpsilonGreedy and LinUCB are deterministic up to ties (broken uniformly at random) and the
  epsilon exploration: ``P(a) = (1 - epsilon) [a among the t tied best] / t + epsilon / n_actions``.
  Scores within ``1e-12`` (relative) of the row's best count as tied.
- Thompson sampling: ``P(a)`` is the probability that a's Gaussian score is the largest,
  ``E_z[prod_{b != a} Phi((m_a + s_a z - m_b) / s_b)]``, computed by numerical integration
  (:func:`persona.kernels.bandit.ts_probabilities`; error ~1e-9), or by Monte-Carlo with
  ``propensity="monte_carlo"``.

``action_probabilities(contexts)`` returns the whole (n, n_actions) distribution, the ``target``
that :func:`persona.ope.estimate` takes. ``update(contexts, actions, rewards)`` folds a batch in
(Numba Sherman-Morrison steps, with a Cholesky refresh of an action's inverse once it has taken
``n_features`` rank-one steps). Policies save as data (JSON + ``.npy``, no pickle) and load with
their random stream where it was.

A policy object is not thread-safe (``choose`` advances its random generator); give each worker
its own, or guard it with a lock.

>>> import numpy as np
>>> from persona.marketing.bandits import LinUCB
>>> policy = LinUCB(n_actions=3, alpha=0.5, random_state=0)
>>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> policy.update(x, actions=[0, 2], rewards=[1.0, 1.0]).counts_.tolist()
[1, 0, 1]
>>> actions, propensities = policy.choose(x)
>>> actions.tolist(), propensities.tolist()
([0, 2], [1.0, 1.0])
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np

from .._validate import check_int, check_number
from ..errors import ArtifactError, DataError, NotFittedError, ParameterError
from ..typing import ArrayLike, PathLike

__all__ = ["LinearBandit", "LinUCB", "LinearThompsonSampling", "EpsilonGreedy", "load_policy"]

ARTIFACT_KIND = "bandit"
_TIE_RTOL = 1e-12


def _kernels():
    """The Numba kernels, or their numpy references when Numba is missing."""
    try:
        from ..kernels import bandit
    except ImportError:  # pragma: no cover - numba is a dependency
        from ..kernels import _bandit_reference as bandit
    return bandit


#: Bytes the per-action state (precision and covariance, n_actions x d x d float64 each) may take.
MAX_STATE_BYTES = 2 << 30
#: Largest Monte Carlo sample count for Thompson propensities.
MAX_SAMPLES = 1_000_000


BanditT = TypeVar("BanditT", bound="LinearBandit")


class LinearBandit:
    """Per-action ridge statistics shared by the linear bandits; subclasses define the policy.

    Parameters
    ----------
    n_actions : int
        Number of actions (offers, items, channels), indexed 0..n_actions-1.
    regularization : float
        Ridge penalty (> 0); also the prior precision of every action's coefficients.
    fit_intercept : bool
        Append a constant 1 feature to every context.
    random_state : int or None
        Seed of the exploration (ties, epsilon draws, Thompson draws).

    Attributes
    ----------
    n_features_ : int
        Context width seen at the first update or choice (without the intercept).
    precision_, covariance_ : (n_actions, d, d)
        ``regularization * I + sum x x^T`` per action and its inverse (``d = n_features_ + fit_intercept``).
    b_ : (n_actions, d)
        ``sum reward * x`` per action.
    theta_ : (n_actions, d)
        Ridge estimate per action (``covariance_ @ b_``); the intercept, if any, is the last entry.
    counts_ : (n_actions,)
        Rounds folded in per action.
    """

    _extra_params: tuple[str, ...] = ()

    def __init__(self, n_actions: int, *, regularization: float = 1.0, fit_intercept: bool = True,
                 random_state: int | None = None) -> None:
        self.n_actions = n_actions
        self.regularization = regularization
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict:
        names = ("n_actions", "regularization", "fit_intercept", "random_state") + self._extra_params
        return {k: getattr(self, k) for k in names}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _validate(self) -> None:
        check_int(self.n_actions, "n_actions", min=1)
        check_number(self.regularization, "regularization", min=0.0, min_open=True)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ParameterError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")
        check_int(self.random_state, "random_state", min=0, allow_none=True, expected="a non-negative integer or None")

    # ------------------------------------------------------------------ state
    def reset(self, n_features: int) -> "LinearBandit":
        """Forget everything: the prior for contexts of ``n_features`` columns; the seed restarts."""
        self._validate()
        check_int(n_features, "n_features", min=0)
        d = int(n_features) + int(bool(self.fit_intercept))
        if d == 0:
            raise DataError("contexts have 0 columns and fit_intercept=False: nothing to learn from; "
                            "set fit_intercept=True for a context-free bandit")
        a = int(self.n_actions)
        need = 2 * 8 * a * d * d
        if need > MAX_STATE_BYTES:  # refused before allocating: n_actions x d x d matrices, twice
            raise ParameterError(
                f"n_actions={a} with {d} context columns needs {need / 2**30:.1f} GiB of per-action state, "
                f"expected at most {MAX_STATE_BYTES / 2**30:.0f} GiB; use fewer actions or fewer context columns")
        eye = np.eye(d)
        self.n_features_ = int(n_features)
        self.precision_ = np.repeat(eye[None] * float(self.regularization), a, axis=0)
        self.covariance_ = np.repeat(eye[None] / float(self.regularization), a, axis=0)
        self.b_ = np.zeros((a, d))
        self.theta_ = np.zeros((a, d))
        self.counts_ = np.zeros(a, dtype=np.int64)
        self._pending = np.zeros(a, dtype=np.int64)
        self._rng = np.random.default_rng(self.random_state)
        return self

    def _design(self, contexts: ArrayLike, *, init: bool) -> np.ndarray:
        try:
            x = np.asarray(contexts, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("contexts: expected a numeric 2-D array (one row per round)") from None
        if x.ndim != 2:
            raise DataError(f"contexts: expected a 2-D array (n_rounds, n_features), got shape {x.shape}; "
                            "for one round pass contexts[None, :], for no features np.zeros((n, 0))")
        if not np.isfinite(x).all():
            r, c = np.nonzero(~np.isfinite(x))
            raise DataError(f"contexts: non-finite values at (row, column) {list(zip(r[:5].tolist(), c[:5].tolist()))}")
        if not hasattr(self, "n_features_"):
            if not init:
                raise NotFittedError(f"this {type(self).__name__} has seen no context yet; call update or choose")
            self.reset(x.shape[1])
        elif x.shape[1] != self.n_features_:
            raise DataError(f"contexts have {x.shape[1]} columns but the policy was built for {self.n_features_}")
        if self.fit_intercept:
            x = np.hstack([x, np.ones((len(x), 1))])
        return np.ascontiguousarray(x)

    # ------------------------------------------------------------------ learning
    def update(self: BanditT, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike) -> BanditT:
        """Fold a batch of feedback in: the context, the action shown and the reward of each round.

        Returns self. Rows are applied in order, so one batch equals the same rows one at a time.
        """
        x = self._design(contexts, init=True)
        n = len(x)
        a = np.asarray(actions)
        if a.shape != (n,):
            raise DataError(f"actions has shape {a.shape} but contexts has {n} rows; pass one action per round")
        integral = a.dtype.kind in "iu" or (a.dtype.kind == "f" and bool(np.all(a == np.round(a))))
        if not integral:
            raise DataError(f"actions: expected integer action indices, got dtype {a.dtype}")
        a = a.astype(np.int64)
        if n and (a.min() < 0 or a.max() >= self.n_actions):
            rows = np.flatnonzero((a < 0) | (a >= self.n_actions))[:5]
            raise DataError(f"actions must lie in [0, {self.n_actions}), got {a[rows].tolist()} "
                            f"at rows {rows.tolist()}")
        try:
            r = np.asarray(rewards, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("rewards: expected numbers") from None
        if r.shape != (n,) or not np.isfinite(r).all():
            raise DataError(f"rewards: expected {n} finite values (one per round), got shape {r.shape}")
        if n == 0:
            return self
        k = _kernels()
        k.ridge_update(self.precision_, self.covariance_, self.b_, self.counts_, x, a, r)
        touched = np.unique(a)
        self._pending[touched] += np.bincount(a, minlength=self.n_actions)[touched]
        d = x.shape[1]
        stale = touched[self._pending[touched] >= d]
        if len(stale):  # Sherman-Morrison drifts slowly; recompute the inverse from the precision
            from scipy.linalg import cho_factor, cho_solve

            eye = np.eye(d)
            for j in stale:
                self.covariance_[j] = cho_solve(cho_factor(self.precision_[j]), eye)
            self._pending[stale] = 0
        self.theta_[touched] = np.einsum("aij,aj->ai", self.covariance_[touched], self.b_[touched])
        return self

    def fit(self: BanditT, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike) -> BanditT:
        """Start over and learn from these rounds (e.g. logs of a uniform-random policy); returns self."""
        x = np.asarray(contexts)
        self.reset(x.shape[1] if x.ndim == 2 else 0)
        return self.update(contexts, actions, rewards)

    # ------------------------------------------------------------------ scoring
    def _moments(self, x: np.ndarray):
        return _kernels().posterior_moments(x, self.theta_, self.covariance_)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def action_probabilities(self, contexts: ArrayLike) -> np.ndarray:
        """The policy's probability of every action in every round: (n_rounds, n_actions), rows sum to 1.

        Pass it as ``target`` to :func:`persona.ope.estimate` to evaluate this policy on logs.
        """
        return self._probabilities(self._design(contexts, init=True))

    def choose(self, contexts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """One action per round and its probability under the policy (log it as the propensity).

        Returns
        -------
        actions : int64 (n_rounds,)
        propensities : float64 (n_rounds,)
        """
        x = self._design(contexts, init=True)
        p = self._probabilities(x)
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        cum = np.cumsum(p, axis=1)
        u = self._rng.random(len(x)) * cum[:, -1]
        a = (cum <= u[:, None]).sum(axis=1)
        # rounding could step past the last action with positive probability
        last = p.shape[1] - 1 - np.argmax(p[:, ::-1] > 0, axis=1)
        a = np.minimum(a, last)
        return a.astype(np.int64), p[np.arange(len(x)), a]

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> Path:
        """Write the policy as an artifact directory (JSON manifest + ``.npy``; no pickle)."""
        from ..io.artifact import write_artifact

        fitted = hasattr(self, "n_features_")
        meta = {"class": type(self).__name__, "params": self.get_params(), "fitted": fitted}
        arrays = {}
        if fitted:
            meta["n_features"] = self.n_features_
            meta["rng"] = self._rng.bit_generator.state
            arrays = {"precision": self.precision_, "covariance": self.covariance_, "b": self.b_,
                      "theta": self.theta_, "counts": self.counts_, "pending": self._pending}
        return write_artifact(path, ARTIFACT_KIND, meta, arrays)

    @classmethod
    def load(cls: type[BanditT], path: PathLike) -> BanditT:
        """Read a policy saved by :meth:`save` (any bandit class when called on LinearBandit)."""
        policy = load_policy(path)
        if cls is not LinearBandit and not isinstance(policy, cls):
            raise ArtifactError(f"{path} holds a {type(policy).__name__}, not a {cls.__name__}")
        return policy


def _tied_best(scores: np.ndarray) -> np.ndarray:
    best = scores.max(axis=1, keepdims=True)
    return scores >= best - _TIE_RTOL * np.maximum(1.0, np.abs(best))


def _greedy_with_epsilon(scores: np.ndarray, epsilon: float) -> np.ndarray:
    tie = _tied_best(scores)
    p = (1.0 - epsilon) * tie / tie.sum(axis=1, keepdims=True)
    return p + epsilon / scores.shape[1]


class EpsilonGreedy(LinearBandit):
    """Greedy on the per-action ridge estimate, uniform exploration with probability ``epsilon``.

    Parameters are those of :class:`LinearBandit`, plus ``epsilon`` in [0, 1].

    >>> import numpy as np
    >>> policy = EpsilonGreedy(n_actions=4, epsilon=0.2, random_state=0)
    >>> policy.update(np.ones((2, 1)), actions=[1, 1], rewards=[1.0, 1.0])
    EpsilonGreedy(n_actions=4, regularization=1.0, fit_intercept=True, random_state=0, epsilon=0.2)
    >>> policy.action_probabilities(np.ones((1, 1))).round(2).tolist()
    [[0.05, 0.85, 0.05, 0.05]]
    """

    _extra_params = ("epsilon",)

    def __init__(self, n_actions: int, *, epsilon: float = 0.1, regularization: float = 1.0,
                 fit_intercept: bool = True, random_state: int | None = None) -> None:
        super().__init__(n_actions, regularization=regularization, fit_intercept=fit_intercept,
                         random_state=random_state)
        self.epsilon = epsilon

    def _validate(self) -> None:
        super()._validate()
        check_number(self.epsilon, "epsilon", min=0.0, max=1.0)

    def _probabilities(self, x):
        return _greedy_with_epsilon(x @ self.theta_.T, float(self.epsilon))


class LinUCB(LinearBandit):
    """Disjoint LinUCB: the action with the largest upper confidence bound on its expected reward.

    ``ucb[a] = theta[a] . x + alpha * sqrt(x^T covariance[a] x)``; ties are broken uniformly at
    random and, with ``epsilon > 0``, a uniform action is shown with probability ``epsilon`` (so
    that its logs support off-policy evaluation of other policies).

    Parameters are those of :class:`LinearBandit`, plus ``alpha`` (>= 0, the width of the bonus) and
    ``epsilon`` in [0, 1] (default 0).
    """

    _extra_params = ("alpha", "epsilon")

    def __init__(self, n_actions: int, *, alpha: float = 1.0, epsilon: float = 0.0, regularization: float = 1.0,
                 fit_intercept: bool = True, random_state: int | None = None) -> None:
        super().__init__(n_actions, regularization=regularization, fit_intercept=fit_intercept,
                         random_state=random_state)
        self.alpha = alpha
        self.epsilon = epsilon

    def _validate(self) -> None:
        super()._validate()
        check_number(self.alpha, "alpha", min=0.0)
        check_number(self.epsilon, "epsilon", min=0.0, max=1.0)

    def scores(self, contexts: ArrayLike) -> np.ndarray:
        """The upper confidence bounds: (n_rounds, n_actions)."""
        return self._ucb(self._design(contexts, init=True))

    def _ucb(self, x):
        mean, width = self._moments(x)
        return mean + float(self.alpha) * width

    def _probabilities(self, x):
        return _greedy_with_epsilon(self._ucb(x), float(self.epsilon))


class LinearThompsonSampling(LinearBandit):
    """Linear Thompson sampling with a Gaussian posterior per action.

    Each round draws, for every action independently, a score from
    ``N(theta[a] . x, scale^2 * x^T covariance[a] x)`` -- the score distribution of a coefficient
    vector drawn from the posterior ``N(theta[a], scale^2 covariance[a])`` -- and shows the largest.

    Parameters are those of :class:`LinearBandit`, plus

    scale : float
        Posterior scale (> 0): larger explores more (``v`` of Agrawal and Goyal).
    propensity : {"exact", "monte_carlo"}
        How :meth:`action_probabilities` (and the propensities of :meth:`choose`) are computed:
        numerical integration of the exact formula (error ~1e-9), or the frequencies of
        ``n_samples`` seeded draws per round (each chosen action's propensity floored at
        ``1 / n_samples``).
    n_samples : int
        Draws per round for ``propensity="monte_carlo"``.

    >>> import numpy as np
    >>> policy = LinearThompsonSampling(n_actions=2, scale=0.5, random_state=0)
    >>> policy.action_probabilities(np.zeros((1, 1))).tolist()   # nothing learnt: a coin flip
    [[0.5, 0.5]]
    """

    _extra_params = ("scale", "propensity", "n_samples")

    def __init__(self, n_actions: int, *, scale: float = 1.0, propensity: str = "exact", n_samples: int = 10_000,
                 regularization: float = 1.0, fit_intercept: bool = True, random_state: int | None = None) -> None:
        super().__init__(n_actions, regularization=regularization, fit_intercept=fit_intercept,
                         random_state=random_state)
        self.scale = scale
        self.propensity = propensity
        self.n_samples = n_samples

    def _validate(self) -> None:
        super()._validate()
        check_number(self.scale, "scale", min=0.0, min_open=True)
        if self.propensity not in ("exact", "monte_carlo"):
            raise ParameterError(f"propensity must be 'exact' or 'monte_carlo', got {self.propensity!r}")
        check_int(self.n_samples, "n_samples", min=1, max=MAX_SAMPLES)

    def _score_distribution(self, x):
        mean, width = self._moments(x)
        return mean, float(self.scale) * width

    def _probabilities(self, x, mean=None, std=None):
        if mean is None:
            mean, std = self._score_distribution(x)
        if self.propensity == "exact":
            k = _kernels()
            nodes, weights = np.polynomial.legendre.leggauss(8)
            return k.ts_probabilities(np.ascontiguousarray(mean), np.ascontiguousarray(std), nodes, weights)
        return self._monte_carlo(mean, std)

    def _monte_carlo(self, mean, std):
        # its own generator, seeded the same way every call: action_probabilities stays a function
        rng = np.random.default_rng([0 if self.random_state is None else int(self.random_state), 0x7453])
        n, n_actions = mean.shape
        out = np.zeros((n, n_actions))
        samples = int(self.n_samples)
        chunk = (1 << 22) // max(1, n_actions * samples)
        if chunk == 0:  # one row's draws exceed the block: draw it in pieces (the same random stream)
            per_block = max(1, (1 << 22) // max(1, n_actions))
            for row in range(n):
                for s0 in range(0, samples, per_block):
                    draws = mean[row] + std[row] * rng.standard_normal((min(per_block, samples - s0), n_actions))
                    out[row] += np.bincount(draws.argmax(axis=1), minlength=n_actions)
            return out / float(samples)
        for start in range(0, n, chunk):
            m, s = mean[start:start + chunk], std[start:start + chunk]
            draws = m[:, None, :] + s[:, None, :] * rng.standard_normal((len(m), samples, n_actions))
            win = draws.argmax(axis=2)
            for j in range(len(m)):
                out[start + j] = np.bincount(win[j], minlength=n_actions)
        return out / float(self.n_samples)

    def choose(self, contexts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Thompson draws: one action per round, with its probability under the policy."""
        x = self._design(contexts, init=True)
        n = len(x)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        mean, std = self._score_distribution(x)
        draws = mean + std * self._rng.standard_normal(mean.shape)
        tie = draws == draws.max(axis=1, keepdims=True)
        if (tie.sum(axis=1) > 1).any():  # zero widths: equal scores, broken uniformly
            keys = np.where(tie, self._rng.random(mean.shape), -1.0)
            a = keys.argmax(axis=1)
        else:
            a = draws.argmax(axis=1)
        p = self._probabilities(x, mean, std)[np.arange(n), a]
        if self.propensity == "monte_carlo":
            p = np.maximum(p, 1.0 / float(self.n_samples))
        return a.astype(np.int64), p


_POLICIES = {c.__name__: c for c in (EpsilonGreedy, LinUCB, LinearThompsonSampling)}


def load_policy(path: PathLike) -> LinearBandit:
    """Load any bandit saved with ``save``: the class comes from the manifest (one of the bandits
    above, never code from the file); the random stream resumes where it was saved.
    """
    from ..io.artifact import read_artifact

    manifest, arrays = read_artifact(path)
    if manifest.get("kind") != ARTIFACT_KIND:
        raise ArtifactError(f"{path} holds a {manifest.get('kind')!r} artifact, not a bandit policy")
    meta = manifest.get("meta", {})
    cls = _POLICIES.get(meta.get("class")) if isinstance(meta.get("class"), str) else None
    if cls is None:
        raise ArtifactError(f"{path}: unknown bandit class {meta.get('class')!r}; known: {sorted(_POLICIES)}")
    params = meta.get("params")
    expected = set(cls(1).get_params())
    if not isinstance(params, dict) or set(params) != expected:
        raise ArtifactError(f"{path}: the parameters of {cls.__name__} must be {sorted(expected)}, got {params!r}")
    policy = cls(**params)
    try:
        policy._validate()
    except ParameterError as e:
        raise ArtifactError(f"{path}: invalid parameters ({e})") from None
    if not meta.get("fitted"):
        return policy
    n_features = meta.get("n_features")
    check_int(n_features, f"{path}: n_features", min=0, expected="a non-negative integer", error=ArtifactError)
    policy.reset(n_features)
    a, d = policy.precision_.shape[:2]
    shapes = {"precision": (a, d, d), "covariance": (a, d, d), "b": (a, d), "theta": (a, d), "counts": (a,),
              "pending": (a,)}
    for name, shape in shapes.items():
        arr = arrays.get(name)
        if arr is None or arr.shape != shape or arr.dtype.kind not in ("iu" if name in ("counts", "pending") else "f"):
            got = None if arr is None else (arr.shape, arr.dtype.str)
            raise ArtifactError(f"{path}: array {name!r} must have shape {shape}, got {got}")
    policy.precision_ = np.array(arrays["precision"], dtype=np.float64)
    policy.covariance_ = np.array(arrays["covariance"], dtype=np.float64)
    policy.b_ = np.array(arrays["b"], dtype=np.float64)
    policy.theta_ = np.array(arrays["theta"], dtype=np.float64)
    policy.counts_ = np.array(arrays["counts"], dtype=np.int64)
    policy._pending = np.array(arrays["pending"], dtype=np.int64)
    state = meta.get("rng")
    try:
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("not a PCG64 state")
        policy._rng.bit_generator.state = state
    except (ValueError, TypeError, KeyError) as e:
        raise ArtifactError(f"{path}: the saved random state is malformed ({e})") from None
    return policy
