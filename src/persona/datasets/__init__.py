"""Data sets: a seeded synthetic shop and loaders for public reference data."""

from .synthetic import Shop, synthetic_shop

__all__ = ["Shop", "synthetic_shop"]
