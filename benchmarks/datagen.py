"""Seeded synthetic data shared by the benchmarks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def power_law_matrix(n_users: int, n_items: int, nnz: int, exponent: float = 0.8, seed: int = 0) -> sp.csr_matrix:
    """Seeded users x items 0/1 CSR whose item popularity follows rank^-exponent (duplicates merged)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** exponent
    items = rng.choice(n_items, size=nnz, p=p / p.sum())
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    users = rng.choice(n_users, size=nnz, p=activity / activity.sum())
    m = sp.csr_matrix((np.ones(nnz, dtype=np.float32), (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
