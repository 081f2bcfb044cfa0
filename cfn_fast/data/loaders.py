"""Where :func:`load_ratings` and :func:`load_movielens` were defined; they are re-exported here.

One rating file (or DataFrame / sparse matrix) is read by :mod:`cfn_fast.data.rating_files`, a
MovieLens folder with side information by :mod:`cfn_fast.data.movielens`.  This module keeps
``from cfn_fast.data.loaders import load_ratings, load_movielens`` working.
"""
from __future__ import annotations

from .movielens import load_movielens
from .rating_files import load_ratings

__all__ = ["load_movielens", "load_ratings"]
