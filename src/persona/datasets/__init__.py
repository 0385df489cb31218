"""Data sets: a seeded synthetic shop and loaders for the public reference data.

>>> from persona.datasets import synthetic_shop
>>> shop = synthetic_shop(n_users=100, n_items=50, seed=0)
>>> shop.events.columns.tolist()
['user_id', 'item_id', 'timestamp', 'event', 'value', 'session_id']
"""

from .loaders import (
    DataNotFoundError,
    SequenceData,
    default_data_path,
    load_open_bandit,
    load_sequences,
    parse_sequences,
)
from .simulation import DayLog, SimulatedShop, simulated_shop
from .synthetic import Shop, synthetic_shop

__all__ = [
    "synthetic_shop", "Shop",
    "simulated_shop", "SimulatedShop", "DayLog",
    "load_sequences", "SequenceData", "parse_sequences",
    "load_open_bandit",
    "default_data_path", "DataNotFoundError",
]
