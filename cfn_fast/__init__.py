"""cfn_fast: collaborative filtering with denoising autoencoders (CFN / CFN++), fast.

>>> from cfn_fast import CFN, load_ratings, train_test_split
"""
from . import engine
from .backends import available_backends, resolve_backend
from .data import (
                   RatingSet,
                   download_movielens,
                   load_movielens,
                   load_ratings,
                   synthetic_ratings,
                   train_test_split,
                   train_validation_test_split,
)
from .engine import ENGINE_API_VERSION, make_engine
from .fitted.persistence import ModelFileError
from .metrics import mean_ci, rmse, rmse_by_popularity
from .model import CFN, DEFAULTS, ModelBusyError, NotFittedError
from .stacking import StackedCFN
from .training.trainer import EarlyStopping, TrainingDiverged
from .version import __version__

__all__ = [
    "CFN", "StackedCFN", "DEFAULTS", "NotFittedError", "ModelBusyError", "ModelFileError", "EarlyStopping",
    "TrainingDiverged",
    "RatingSet", "load_ratings", "load_movielens", "download_movielens", "synthetic_ratings", "train_test_split",
    "train_validation_test_split", "rmse", "mean_ci", "rmse_by_popularity", "available_backends",
    "resolve_backend", "__version__", "engine", "make_engine", "ENGINE_API_VERSION",
]
