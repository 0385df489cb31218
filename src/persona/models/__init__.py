"""Recommender models sharing one interface (see :class:`persona.models.base.Recommender`)."""

from .als import ALS
from .base import PAD_SCORE, Recommender, load, pad_id_for
from .bpr import BPR
from .content import ContentKNN
from .ease import EASE
from .factor import FactorModel
from .knn import ItemKNN, UserKNN
from .mf import MF
from .popular import MostPopular
from .sasrec import SASRec
from .twotower import TwoTower

__all__ = ["Recommender", "FactorModel", "MostPopular", "ItemKNN", "UserKNN", "ALS", "MF", "BPR", "EASE",
           "SASRec", "TwoTower", "ContentKNN", "PAD_SCORE", "pad_id_for", "load"]
