"""Slow, obviously-correct references of the slate estimators: plain loops over rounds and positions.

The tests check :func:`persona.ope.estimate_slates` against these on random inputs. Inputs are plain
Python lists: ``items[i]`` the shown ids of round ``i`` (its length is the list's), ``clicks[i]``,
``props[i]`` (logging marginals), ``target[i]`` the target's ids and, for a randomised target,
``tprops[i][j][k]``; ``q(i, item, k)`` a reward model; ``K`` the logs' positions. The
pseudoinverse builds ``Gamma`` by enumerating every list the logging policy can draw
(``slate_probability`` over all ordered choices of the round's candidates) instead of using the
policy's closed form.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _target_prob(target, tprops, i, item, k):
    """P(target shows ``item`` at position ``k``) in round ``i``."""
    if tprops is None:
        return 1.0 if k < len(target[i]) and target[i][k] is not None and target[i][k] == item else 0.0
    return math.fsum(tprops[i][j][k] for j, a in enumerate(target[i]) if a is not None and a == item)


def _target_items(target, tprops, i, k):
    """(item, probability) pairs of the target at position ``k`` of round ``i``."""
    if tprops is None:
        return [(target[i][k], 1.0)] if k < len(target[i]) and target[i][k] is not None else []
    return [(a, tprops[i][j][k]) for j, a in enumerate(target[i]) if a is not None and tprops[i][j][k] > 0]


def reference_terms(method, items, clicks, props, target, K, *, tprops=None, q=None, clip=None, candidates=None,
                    policy=None, scores=None, slate_props=None):
    """Per-round terms of ``method``, from the definitions (divided by ``K``)."""
    out = []
    for i in range(len(items)):
        L = len(items[i])
        w = []
        for k in range(L):
            x = _target_prob(target, tprops, i, items[i][k], k) / props[i][k]
            w.append(min(x, clip) if clip is not None else x)
        r = math.fsum(clicks[i][:L])
        dm = []
        if q is not None:
            for k in range(L):
                dm.append(math.fsum(p * q(i, a, k) for a, p in _target_items(target, tprops, i, k)))
        if method == "ips-position":
            t = math.fsum(w[k] * clicks[i][k] for k in range(L))
        elif method == "dm":
            t = math.fsum(dm)
        elif method == "dr-position":
            t = math.fsum(dm[k] + w[k] * (clicks[i][k] - q(i, items[i][k], k)) for k in range(L))
        elif method in ("pi", "dr-pi"):
            omega = pi_weight(items[i], candidates[i], policy, None if scores is None else scores[i],
                              [_target_items(target, tprops, i, k) for k in range(L)])
            if method == "pi":
                t = r * omega
            else:
                t = math.fsum(dm) + (r - math.fsum(q(i, items[i][k], k) for k in range(L))) * omega
        elif method == "ips-slate":
            same = all(k < len(target[i]) and target[i][k] == items[i][k] for k in range(L))
            ws = (1.0 if same else 0.0) / slate_props[i]
            if clip is not None:
                ws = min(ws, clip)
            t = r * ws
        else:
            raise ValueError(method)
        out.append(t / K)
    return out


def enumerate_gamma(candidates, policy, scores, L):
    """``E[1_s 1_s^T]`` over every list of ``L`` of the candidates, by enumeration."""
    m = len(candidates)
    sc = np.zeros(m) if scores is None else np.asarray(scores, dtype=float)
    gamma = np.zeros((L * m, L * m))
    for perm in itertools.permutations(range(m), L):
        p = policy.slate_probability(sc, list(perm))
        x = np.zeros(L * m)
        for k, j in enumerate(perm):
            x[k * m + j] = 1.0
        gamma += p * np.outer(x, x)
    return gamma


def pi_weight(shown, candidates, policy, scores, target_by_position):
    """``q_pi^T Gamma^+ 1_s`` with Gamma enumerated."""
    m, L = len(candidates), len(shown)
    gamma = enumerate_gamma(candidates, policy, scores, L)
    g = np.linalg.pinv(gamma, rcond=1e-10, hermitian=True)
    qv = np.zeros(L * m)
    for k in range(L):
        for a, p in target_by_position[k]:
            if a in candidates:
                qv[k * m + candidates.index(a)] += p
    sv = np.zeros(L * m)
    for k, a in enumerate(shown):
        sv[k * m + candidates.index(a)] = 1.0
    return float(qv @ g @ sv)
