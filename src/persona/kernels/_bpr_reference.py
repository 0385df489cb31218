"""Slow, obviously-correct numpy references for the BPR kernels (``persona.kernels.bpr``).

Factor layout as in the kernels: the last column of ``user_factors`` is the constant 1.0 and the last
column of ``item_factors`` is the item bias, so ``x_uij = user_factors[u] @ (item_factors[i] -
item_factors[j])`` already includes ``b_i - b_j``.

The per-triple objective is

    L(u, i, j) = -ln sigmoid(x_uij) + reg / 2 * (|p_u|^2 + |q_i|^2 + |q_j|^2)

with ``p_u`` the user's latent part (the constant column excluded) and ``q_i``, ``q_j`` the items'
whole rows (bias included). One SGD step is one gradient step of ``L`` with step size ``lr``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "bpr_update_reference", "bpr_loss", "bpr_pair_accuracy"]


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise, without overflow warnings."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))  # <= 1, never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _x(user_factors, item_factors, users, pos, neg) -> np.ndarray:
    p = np.asarray(user_factors, dtype=np.float64)[users]
    q = np.asarray(item_factors, dtype=np.float64)
    return np.einsum("sf,sf->s", p, q[pos] - q[neg])


def bpr_update_reference(user_factors: np.ndarray, item_factors: np.ndarray, u: int, i: int, j: int,
                         lr: float, reg: float) -> float:
    """One SGD step on the triple (u, i, j), in place; returns the loss -ln sigmoid(x_uij) before it."""
    f = user_factors.shape[1] - 1
    p = user_factors[u, :f].astype(np.float64)
    qi = item_factors[i].astype(np.float64)
    qj = item_factors[j].astype(np.float64)
    x = float(np.dot(p, qi[:f] - qj[:f]) + (qi[f] - qj[f]))
    z = float(sigmoid(-x))  # d ln sigmoid(x) / dx
    grad_p = z * (qi[:f] - qj[:f]) - reg * p
    grad_qi = np.append(z * p, z) - reg * qi
    grad_qj = np.append(-z * p, -z) - reg * qj
    user_factors[u, :f] = p + lr * grad_p
    item_factors[i] = qi + lr * grad_qi
    item_factors[j] = qj + lr * grad_qj
    return float(np.logaddexp(0.0, -x))


def bpr_loss(user_factors: np.ndarray, item_factors: np.ndarray, users, pos, neg,
             regularization: float = 0.0) -> float:
    """Mean over triples of ``-ln sigmoid(x_uij)`` plus, when ``regularization`` > 0, the L2 term above.

    With ``regularization=0`` this is the plain BPR ranking loss (ln 2 for a model that cannot tell
    items apart, 0 for one that orders every pair with infinite confidence).
    """
    users, pos, neg = (np.asarray(a, dtype=np.int64) for a in (users, pos, neg))
    if len(users) == 0:
        return 0.0
    loss = np.logaddexp(0.0, -_x(user_factors, item_factors, users, pos, neg))
    if regularization:
        f = user_factors.shape[1] - 1
        p = np.asarray(user_factors, dtype=np.float64)[users, :f]
        q = np.asarray(item_factors, dtype=np.float64)
        loss = loss + 0.5 * regularization * ((p ** 2).sum(1) + (q[pos] ** 2).sum(1) + (q[neg] ** 2).sum(1))
    return float(loss.mean())


def bpr_pair_accuracy(user_factors: np.ndarray, item_factors: np.ndarray, users, pos, neg) -> float:
    """Fraction of triples whose positive scores strictly above the negative."""
    users, pos, neg = (np.asarray(a, dtype=np.int64) for a in (users, pos, neg))
    if len(users) == 0:
        return 0.0
    return float(np.mean(_x(user_factors, item_factors, users, pos, neg) > 0))
