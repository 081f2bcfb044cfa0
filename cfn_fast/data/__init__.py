"""Data layer: rating sets, loaders for the original file formats, splits, side information."""
from .download import download_movielens
from .movielens import load_movielens
from .rating_files import load_ratings
from .ratings import RatingSet
from .side_info import low_rank_embedding, multi_hot, one_hot
from .split import train_test_split, train_validation_test_split
from .synthetic import synthetic_ratings

__all__ = [
    "RatingSet",
    "download_movielens",
    "load_movielens",
    "load_ratings",
    "low_rank_embedding",
    "multi_hot",
    "one_hot",
    "synthetic_ratings",
    "train_test_split",
    "train_validation_test_split",
]
