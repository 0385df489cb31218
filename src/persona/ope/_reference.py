"""Slow, obviously-correct references of the off-policy estimators: one Python loop over rounds.

The tests check :func:`persona.ope.estimate` against these on random inputs. Inputs are plain
arrays: ``target`` (n, n_actions, n_positions), ``q`` (n, n_actions, n_positions), ``action``,
``position``, ``reward``, ``propensity`` (n,).
"""

from __future__ import annotations

import math
from statistics import NormalDist


def _weights(target, action, position, propensity, clip):
    out = []
    for i in range(len(action)):
        w = float(target[i][action[i]][position[i]]) / float(propensity[i])
        if clip is not None and w > clip:
            w = float(clip)
        out.append(w)
    return out


def reference_terms(method, target, q, action, position, reward, propensity, clip=None):
    """(value, per-round terms) of ``method`` by plain loops."""
    n = len(action)
    n_actions = len(target[0])
    w = _weights(target, action, position, propensity, clip)
    dm, resid = [], []
    for i in range(n):
        k = position[i]
        s = 0.0
        for a in range(n_actions):
            s += float(target[i][a][k]) * float(q[i][a][k])
        dm.append(s)
        resid.append(float(reward[i]) - float(q[i][action[i]][k]))
    terms = []
    if method == "dm":
        terms = dm
    elif method == "ipw":
        terms = [w[i] * float(reward[i]) for i in range(n)]
    elif method == "dr":
        terms = [dm[i] + w[i] * resid[i] for i in range(n)]
    elif method == "snipw":
        sw = math.fsum(w)
        v = math.fsum(w[i] * float(reward[i]) for i in range(n)) / sw
        wbar = sw / n
        terms = [v + w[i] * (float(reward[i]) - v) / wbar for i in range(n)]
    elif method == "sndr":
        sw = math.fsum(w)
        c = math.fsum(w[i] * resid[i] for i in range(n)) / sw
        wbar = sw / n
        terms = [dm[i] + c + w[i] * (resid[i] - c) / wbar for i in range(n)]
    else:
        raise ValueError(method)
    return math.fsum(terms) / n, terms


def reference_value(method, target, q, action, position, reward, propensity, clip=None):
    """The estimate, computed from its defining formula (not from the terms)."""
    n = len(action)
    n_actions = len(target[0])
    w = _weights(target, action, position, propensity, clip)
    dm = [math.fsum(float(target[i][a][position[i]]) * float(q[i][a][position[i]]) for a in range(n_actions))
          for i in range(n)]
    resid = [float(reward[i]) - float(q[i][action[i]][position[i]]) for i in range(n)]
    if method == "dm":
        return math.fsum(dm) / n
    if method == "ipw":
        return math.fsum(w[i] * float(reward[i]) for i in range(n)) / n
    if method == "snipw":
        return math.fsum(w[i] * float(reward[i]) for i in range(n)) / math.fsum(w)
    if method == "dr":
        return math.fsum(dm[i] + w[i] * resid[i] for i in range(n)) / n
    if method == "sndr":
        return math.fsum(dm) / n + math.fsum(w[i] * resid[i] for i in range(n)) / math.fsum(w)
    raise ValueError(method)


def reference_normal_ci(terms, alpha):
    """(low, high, std_error) of the normal interval around the mean of ``terms``."""
    n = len(terms)
    mean = math.fsum(terms) / n
    var = math.fsum((t - mean) ** 2 for t in terms) / (n - 1)
    se = math.sqrt(var / n)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return mean - z * se, mean + z * se, se


def reference_ess(target, action, position, propensity, clip=None):
    w = _weights(target, action, position, propensity, clip)
    return math.fsum(w) ** 2 / math.fsum(x * x for x in w)


def reference_bootstrap(method, target, q, action, position, reward, propensity, clip, n_bootstrap, seed):
    """Bootstrap values: resample ``b`` is ``rng.integers(0, n, n)``, the b-th such draw of one generator."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(action)
    out = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        sub = lambda arr: [arr[j] for j in idx]  # noqa: E731
        w = sum(_weights(sub(target), sub(action), sub(position), sub(propensity), clip))
        if method in ("snipw", "sndr") and w == 0:
            out.append(float("nan"))
            continue
        out.append(reference_value(method, sub(target), sub(q), sub(action), sub(position), sub(reward),
                                   sub(propensity), clip))
    return out
