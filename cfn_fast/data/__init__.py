"""Data layer: rating sets, loaders for the original file formats, splits, side information."""
from .ratings import RatingSet
from .split import train_test_split, train_validation_test_split
from .synthetic import synthetic_ratings
from .rating_files import load_ratings
from .movielens import load_movielens
from .side_info import one_hot, multi_hot, low_rank_embedding
from .download import download_movielens

__all__ = [
    "RatingSet", "train_test_split", "train_validation_test_split", "synthetic_ratings",
    "load_ratings", "load_movielens", "one_hot", "multi_hot", "low_rank_embedding", "download_movielens",
]
