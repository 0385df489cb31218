"""Exploration: randomised lists with exact propensities, for off-policy evaluation of rankers.

A :class:`~persona.serving.RecommenderService` built with ``explore=`` asks its model for the
``top`` best candidates and shows ``n`` of them drawn by a randomised policy, logging with each
shown item the exact probability that the policy put *that item at that position* (the
``propensity`` column of ``store.impressions()``). Those marginal probabilities are what the
position-based estimators of :mod:`persona.ope.slates` divide by, so a candidate model's
click-through rate can be estimated from the logs before any A/B test.

Two policies:

:class:`EpsilonGreedy`
    With probability ``1 - epsilon`` the model's own list; with probability ``epsilon`` a uniformly
    random ordered choice of ``n`` of the ``top`` candidates. The candidate at rank ``j`` is at
    position ``k`` with probability ``(1 - epsilon) [j = k] + epsilon / m`` (``m`` candidates), and
    the pairwise probabilities are as simple (:meth:`EpsilonGreedy.second_moments`), which the
    pseudoinverse estimator needs.
:class:`PlackettLuce`
    Items drawn one position at a time without replacement, each with probability proportional to
    its weight ``exp(logit / temperature)`` (logits: ``-log(rank)``, the default, or the model's
    scores). Sampled exactly by the Gumbel-max trick. The marginal probability of an item at a
    position has no closed form; it is the one-dimensional integral of the "exponential race"
    (item ``a`` arrives at an exponential time of rate ``w_a``; the order of arrival is a
    Plackett-Luce draw)::

        P(a at position k) = integral_0^inf  w_a exp(-w_a t) P_{k-1}(t) dt

    with ``P_{k-1}(t)`` the probability that exactly ``k - 1`` of the other items arrived before
    ``t`` (a Poisson-binomial, by a short recursion). The integrand is an entire function of
    ``log t``, so the trapezoid rule in ``log t`` converges geometrically: with a step of 0.16 and
    the range cut where the tails are below 1e-17, the result matches enumeration of every list to
    rounding (1e-12 relative or better for every probability above 1e-18,
    ``tests/test_explore.py``). With rank logits (the default) the
    marginals depend only on the number of candidates and positions, so they are computed once and
    kept: a request then costs a Gumbel draw and a table lookup.

Both are fork-safe and thread-safe: draws come from one generator behind a lock (seeded by
``seed``; unseeded, every forked worker reseeds, so workers never draw the same lists).
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from typing import Any

from ..typing import ArrayLike

import numpy as np

from .._validate import check_int, check_number
from ..errors import ParameterError

__all__ = ["Exploration", "EpsilonGreedy", "PlackettLuce"]

#: Largest ``top`` accepted (the candidates a policy draws from).
MAX_TOP = 1000
_SPAN = 30.0  # Plackett-Luce logits more than this below the best are raised to it (a weight ratio >= e^-30)
_STEP = 0.16  # trapezoid step in log-time (0.2 gives ~1e-13 relative, 0.25 ~1e-9; 0.16 is at rounding level)
_LOW = 1e-17  # the integrand's mass below t = _LOW / W is at most _LOW
_HIGH = 46.0  # the mass beyond t = _HIGH / w_low is at most n e^-46
_CELLS = 1 << 21  # floats per chunk of the quadrature's recursion


class Exploration:
    """A randomised ranking policy over the ``top`` best candidates of an answer (the base class).

    Subclasses define :meth:`marginals`, :meth:`slate_probability` and the draw; the service calls
    :meth:`sample`.
    """

    top: int

    def __init__(self, *, top: int, seed: int | None) -> None:
        self.top = check_int(top, "top", min=1, max=MAX_TOP,
                             expected=f"the number of candidates to draw from, 1 to {MAX_TOP}")
        if seed is not None:
            check_int(seed, "seed", min=0, expected="a non-negative integer or None")
        self.seed = seed
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (p := ref()) is not None and p._after_fork())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        if self.seed is None:  # forked workers must not draw the same lists
            self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ the public surface
    def sample(self, scores: ArrayLike, n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw a list of ``min(n, len(scores))`` of the candidates.

        Parameters
        ----------
        scores : 1-D array
            The candidates' scores, best first (the order the model ranked them in).
        n : int
            Positions to fill.
        rng : numpy Generator, optional
            Default: the policy's own (seeded by ``seed``), under a lock.

        Returns
        -------
        order : np.ndarray of int64
            The shown candidates' indices into ``scores``, position 1 first.
        propensities : np.ndarray of float64
            For each shown item, the probability that the policy puts that candidate at that
            position (the marginal over every list it can draw), in ``(0, 1]``.
        """
        s = _scores(scores)
        n = check_int(n, "n", min=1, expected="a positive integer")
        k = min(n, len(s))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        if rng is None:
            with self._lock:
                order = self._draw(s, k, self._rng)
        else:
            order = self._draw(s, k, rng)
        return order, self._shown_marginals(s, order)

    def sample_many(self, scores: ArrayLike, n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample` for many requests at once (simulations, benchmarks): vectorised over rows.

        ``scores`` is ``(n_requests, m)`` (every request with ``m`` candidates, best first);
        returns ``orders`` and ``propensities`` of shape ``(n_requests, min(n, m))``, each row
        distributed as one :meth:`sample`.
        """
        try:
            s = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError("scores: expected a 2-D array of candidate scores (one row per request)") from None
        if s.ndim != 2:
            raise ParameterError(f"scores: expected a 2-D array (one row per request, best first), got shape {s.shape}")
        n = check_int(n, "n", min=1, expected="a positive integer")
        k = min(n, s.shape[1])
        if k == 0 or s.shape[0] == 0:
            return np.zeros((s.shape[0], k), dtype=np.int64), np.zeros((s.shape[0], k))
        if rng is None:
            with self._lock:
                return self._sample_many(s, k, self._rng)
        return self._sample_many(s, k, rng)

    def _sample_many(self, s, k, rng):
        rows = [self.sample(row, k, rng) for row in s]
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])

    def marginals(self, scores: ArrayLike, n: int) -> np.ndarray:
        """``P[j, k]``: the probability that candidate ``j`` is shown at position ``k`` (0-based).

        Shape ``(len(scores), min(n, len(scores)))``; every column sums to 1, every row to the
        probability that the candidate is shown at all.
        """
        s = _scores(scores)
        n = check_int(n, "n", min=1, expected="a positive integer")
        return self._marginals(s, min(n, len(s)))

    def slate_probability(self, scores: ArrayLike, order: ArrayLike) -> float:
        """The probability of drawing exactly the list ``order`` (candidate indices, position 1 first)."""
        s = _scores(scores)
        o = _order(order, len(s))
        return float(self._slate_probability(s, o))

    def second_moments(self, m: int, n: int) -> np.ndarray:
        """``G[(k, j), (l, i)] = P(candidate j at position k and candidate i at position l)``.

        Shape ``(n' m, n' m)`` with ``n' = min(n, m)``, rows and columns indexed ``k * m + j``; the
        matrix the pseudoinverse estimator inverts. Defined where it does not depend on the scores.
        """
        raise ParameterError(f"{type(self).__name__}'s pairwise probabilities depend on the scores and have no "
                             f"closed form; the pseudoinverse estimator needs EpsilonGreedy logging (use the "
                             f"position-based estimators, 'ips-position' or 'dr-position', for {type(self).__name__})")

    # ------------------------------------------------------------------ subclasses
    def _draw(self, s: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _marginals(self, s: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def _shown_marginals(self, s: np.ndarray, order: np.ndarray) -> np.ndarray:
        return self._marginals(s, len(order))[order, np.arange(len(order))]

    def _slate_probability(self, s: np.ndarray, order: np.ndarray) -> float:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))


class EpsilonGreedy(Exploration):
    """The model's list, or with probability ``epsilon`` a uniformly random list of its top candidates.

    Parameters
    ----------
    epsilon : float, default 0.1
        The share of answers drawn at random (``1`` shows a uniformly random ordered choice of
        ``n`` of the ``top`` candidates every time; ``0`` never explores).
    top : int, default 20
        The candidates drawn from: the model's ``top`` best for the request (fewer when filters
        leave fewer).
    seed : int, optional
        Seeds the draws (tests); default: fresh entropy, reseeded in forked workers.

    Examples
    --------
    >>> import numpy as np
    >>> policy = EpsilonGreedy(epsilon=0.2, top=4, seed=0)
    >>> order, propensities = policy.sample(np.array([4.0, 3.0, 2.0, 1.0]), n=2)
    >>> policy.marginals(np.zeros(4), 2).round(2).tolist()        # rank j at position k
    [[0.85, 0.05], [0.05, 0.85], [0.05, 0.05], [0.05, 0.05]]
    """

    def __init__(self, epsilon: float = 0.1, *, top: int = 20, seed: int | None = None) -> None:
        self.epsilon = check_number(epsilon, "epsilon", min=0.0, max=1.0,
                                    expected="the share of answers drawn at random, from 0 to 1")
        super().__init__(top=top, seed=seed)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "top": self.top, "seed": self.seed}

    def _draw(self, s, k, rng):
        m = len(s)
        if rng.random() < self.epsilon:
            return rng.permutation(m)[:k].astype(np.int64)
        return np.arange(k, dtype=np.int64)

    def _sample_many(self, s, k, rng):
        b, m = s.shape
        explore = rng.random(b) < self.epsilon
        order = np.broadcast_to(np.arange(k, dtype=np.int64), (b, k)).copy()
        if explore.any():
            order[explore] = np.argsort(rng.random((int(explore.sum()), m)), axis=1)[:, :k]
        return order, np.where(order == np.arange(k), 1.0 - self.epsilon, 0.0) + self.epsilon / m

    def _marginals(self, s, k):
        m = len(s)
        out = np.full((m, k), self.epsilon / m)
        out[np.arange(k), np.arange(k)] += 1.0 - self.epsilon
        return out

    def _shown_marginals(self, s, order):
        m, k = len(s), len(order)
        return np.where(order == np.arange(k), 1.0 - self.epsilon, 0.0) + self.epsilon / m

    def _slate_probability(self, s, order):
        m, k = len(s), len(order)
        uniform = math.exp(math.lgamma(m - k + 1) - math.lgamma(m + 1))  # 1 / (m (m-1) ... (m-k+1))
        own = 1.0 - self.epsilon if np.array_equal(order, np.arange(k)) else 0.0
        return own + self.epsilon * uniform

    def second_moments(self, m: int, n: int) -> np.ndarray:
        """Pairwise probabilities in closed form (see :meth:`Exploration.second_moments`).

        For the uniformly random list, two different positions hold two different candidates, each
        ordered pair with probability ``1 / (m (m - 1))``; a position holds candidate ``j`` with
        probability ``1 / m``. The model's own list puts rank ``k`` at position ``k``.

        >>> round(float(EpsilonGreedy(epsilon=1.0).second_moments(3, 2).sum()), 12)   # n'^2 pairs of positions
        4.0
        """
        m = check_int(m, "m", min=1, expected="the number of candidates, >= 1")
        n = check_int(n, "n", min=1, expected="a positive integer")
        k = min(n, m)
        eye_m = np.eye(m)
        if m > 1:
            off = (1.0 - eye_m) / (m * (m - 1))
        else:
            off = np.zeros((1, 1))
        uniform = np.kron(np.ones((k, k)) - np.eye(k), off) + np.kron(np.eye(k), eye_m / m)
        own = np.zeros(k * m)
        own[np.arange(k) * m + np.arange(k)] = 1.0
        return (1.0 - self.epsilon) * np.outer(own, own) + self.epsilon * uniform


class PlackettLuce(Exploration):
    """Lists drawn position by position, each candidate with probability proportional to its weight.

    Parameters
    ----------
    temperature : float, default 0.5
        Weights are ``exp(logit / temperature)``: small values stay close to the model's order,
        large ones approach a uniform shuffle of the ``top`` candidates.
    top : int, default 20
        The candidates drawn from (the model's ``top`` best for the request).
    on : {"rank", "score"}, default "rank"
        Logits from the candidate's rank, ``-log(rank)`` (the weight of rank ``r`` is
        ``r ** (-1 / temperature)``: the same randomness whatever the scale of the model's scores,
        and for the answers of fallbacks too), or from the model's scores (the temperature is then
        in the scores' units).
    seed : int, optional
        Seeds the draws (tests); default: fresh entropy, reseeded in forked workers.

    Notes
    -----
    Logits more than 30 below the best are raised to ``best - 30`` (a weight ratio of ``e^-30``):
    the policy is defined with that floor, so draws and propensities agree, and the quadrature's
    range stays bounded. With ``on="rank"`` the marginals depend only on the number of candidates
    and positions and are computed once per pair (a few milliseconds) and kept, so an answer costs
    a draw and a lookup; with ``on="score"`` every answer runs the quadrature for its shown items
    (a trapezoid sum over about 300 points of ``log t`` each: a few milliseconds for 10 of 20
    candidates on a loaded core).

    Examples
    --------
    >>> import numpy as np
    >>> policy = PlackettLuce(temperature=1.0, top=3, seed=0)
    >>> p = policy.marginals(np.array([3.0, 2.0, 1.0]), 3)   # weights 1, 1/2, 1/3
    >>> round(float(p[0, 0]), 6), round(float(p.sum()), 6)   # P(best first) = 1 / (1 + 1/2 + 1/3)
    (0.545455, 3.0)
    """

    def __init__(self, temperature: float = 0.5, *, top: int = 20, on: str = "rank", seed: int | None = None) -> None:
        self.temperature = check_number(temperature, "temperature", min=0.0, min_open=True,
                                        expected="a number > 0 (small: close to the model's order)")
        if on not in ("rank", "score"):
            raise ParameterError(f"on: expected 'rank' (logits -log(rank)) or 'score' (the model's scores), got {on!r}")
        self.on = on
        self._tables: dict = {}  # rank logits: (m, k) -> marginals, the same for every request
        super().__init__(top=top, seed=seed)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top": self.top, "on": self.on, "seed": self.seed}

    def logits(self, scores: ArrayLike) -> np.ndarray:
        """The candidates' logits after the temperature and the floor (the policy's definition)."""
        return self._logits(_scores(scores))

    def _logits(self, s: np.ndarray) -> np.ndarray:
        if self.on == "rank":
            raw = -np.log(np.arange(1, len(s) + 1, dtype=np.float64)) / self.temperature
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                raw = np.nan_to_num(s / self.temperature, nan=-np.inf, posinf=np.finfo(np.float64).max)
        best = raw.max() if len(raw) else 0.0
        if not np.isfinite(best):  # every score -inf (or nan): all candidates alike
            return np.zeros(len(s))
        with np.errstate(over="ignore"):  # (-huge) - huge is -inf: floored like any other
            return np.maximum(raw - best, -_SPAN)

    def _draw(self, s, k, rng):
        keys = self._logits(s) + rng.gumbel(size=len(s))  # Gumbel-max: the top k keys are a PL draw
        top = np.argpartition(-keys, k - 1)[:k] if k < len(s) else np.arange(len(s))
        return top[np.argsort(-keys[top], kind="stable")].astype(np.int64)

    def _sample_many(self, s, k, rng):
        b, m = s.shape
        if self.on == "rank":
            logits = np.broadcast_to(self._logits(s[0]), (b, m))
        else:
            logits = np.array([self._logits(row) for row in s])
        keys = logits + rng.gumbel(size=(b, m))
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), (b, m))
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable"),
                                   axis=1).astype(np.int64)
        if self.on == "rank":
            table = self._marginals(s[0], k)
            return order, table[order, np.arange(k)]
        return order, pl_position_probabilities(logits, k, order, diagonal=True)

    def _marginals(self, s, k):
        m = len(s)
        if self.on == "rank":
            table = self._tables.get((m, k))
            if table is None:
                table = self._compute(s, k)
                table.setflags(write=False)
                if len(self._tables) < 4096:  # m <= top and k <= n: a bounded set of pairs in practice
                    self._tables[(m, k)] = table
            return table.copy()
        return self._compute(s, k)

    def _compute(self, s, k):
        m = len(s)
        items = np.broadcast_to(np.arange(m), (1, m))
        return pl_position_probabilities(self._logits(s)[None, :], k, items)[0]

    def _shown_marginals(self, s, order):
        if self.on == "rank":
            return self._marginals(s, len(order))[order, np.arange(len(order))]
        logits = self._logits(s)[None, :]
        return pl_position_probabilities(logits, len(order), order[None, :], diagonal=True)[0]

    def _slate_probability(self, s, order):
        w = np.exp(self._logits(s))
        left = np.ones(len(w), dtype=bool)
        p = 1.0
        for j in order:  # each step: the chosen weight over the weights still unchosen (summed afresh: no cancellation)
            p *= w[j] / math.fsum(w[left])
            left[j] = False
        return p


def pl_position_probabilities(logits: np.ndarray, n: int, items: np.ndarray, *, diagonal: bool = False) -> np.ndarray:
    """Plackett-Luce marginals by the exponential-race integral, vectorised over rows.

    Parameters
    ----------
    logits : (B, m) float
        Log-weights per row (finite).
    n : int
        Positions (``<= m``).
    items : (B, E) int
        For each row, the candidates whose probabilities are wanted.
    diagonal : bool
        False: ``(B, E, n)``, every position of every item asked. True (``E == n``): ``(B, n)``, the
        probability of item ``items[b, k]`` at position ``k``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    items = np.asarray(items, dtype=np.int64)
    b_rows, m = logits.shape
    e = items.shape[1]
    out = np.empty((b_rows, n) if diagonal else (b_rows, e, n))
    # nodes per row: from the range of log t that carries the mass (see the module doc)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    total = w.sum(axis=1)
    ranked = -np.sort(-w, axis=1)
    w_low = ranked[:, min(n, m - 1)]
    lo = np.log(_LOW / total)
    hi = np.log(_HIGH / w_low)
    nodes = int(math.ceil(float((hi - lo).max()) / _STEP)) + 1
    chunk = max(1, _CELLS // max(1, e * nodes * n))
    for start in range(0, b_rows, chunk):
        sl = slice(start, min(b_rows, start + chunk))
        out[sl] = _race(w[sl], lo[sl], hi[sl], nodes, n, items[sl], diagonal)
    return out


def _race(w, lo, hi, nodes, n, items, diagonal):
    """The trapezoid sums of ``P(a at position k)`` for one chunk of rows."""
    b_rows, m = w.shape
    frac = np.linspace(0.0, 1.0, nodes)
    v = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (B, T) log t
    h = (hi - lo) / (nodes - 1)
    t = np.exp(v)
    wt = w[:, :, None] * t[:, None, :]  # (B, m, T)
    q = np.exp(-wt)  # P(j not arrived by t)
    p = -np.expm1(-wt)  # P(j arrived by t), accurate for small w t
    e = items.shape[1]
    # pb[b, e, T, c]: P(exactly c of the items other than items[b, e] arrived by t), c < n
    pb = np.zeros((b_rows, e, nodes, n))
    pb[:, :, :, 0] = 1.0
    for j in range(m):
        skip = (items == j)[:, :, None]  # the excluded item contributes nothing
        qj = np.where(skip, 1.0, q[:, None, j, :])[..., None]
        pj = np.where(skip, 0.0, p[:, None, j, :])[..., None]
        shifted = pb[..., :-1] * pj
        pb *= qj
        pb[..., 1:] += shifted
    wa = np.take_along_axis(w, items, axis=1)  # (B, E)
    qa = np.take_along_axis(q, items[:, :, None], axis=1)  # (B, E, T)
    density = wa[:, :, None] * t[:, None, :] * qa * h[:, None, None]  # w_a e^{-w_a t} dt, dt = t dv
    if diagonal:
        # row b, item e = items[b, k] at position k: count k of the others before it
        counts = pb[:, np.arange(e), :, np.arange(e)]  # (E, B, T)
        return np.einsum("bet,ebt->be", density, counts)
    return np.einsum("bet,betc->bec", density, pb)


def _scores(scores) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"scores: expected the candidates' scores as numbers, best first, got "
                             f"{type(scores).__name__}") from None
    if s.ndim != 1:
        raise ParameterError(f"scores: expected a 1-D array (one score per candidate, best first), got shape {s.shape}")
    return s


def _order(order, m: int) -> np.ndarray:
    try:
        o = np.asarray(order)
    except (TypeError, ValueError):
        o = np.asarray([], dtype=object)
    if o.ndim != 1 or (len(o) and o.dtype.kind not in "iu") or len(o) > m or \
            (len(o) and (o.min() < 0 or o.max() >= m)) or len(np.unique(o)) != len(o):
        raise ParameterError(f"order: expected distinct candidate indices in [0, {m}) (position 1 first), "
                             f"got {order!r:.80}")
    return o.astype(np.int64)
