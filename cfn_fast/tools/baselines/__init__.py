"""The paper's baselines (Strub et al. 2016, Sec. 4.2), compact NumPy/SciPy implementations behind one
tiny interface (``fit(train) -> self``, ``predict_indices(users, items)``, ``score(test)``)."""
from .als_wr import ALSWR
from .autorec import IAutoRec
from .bpmf import BPMF
from .common import Baseline, GlobalMean, ItemMean, UserItemBias
from .linear_cfn import LinearICFN
from .llorma import LLORMA
from .svdfeature import SVDFeature

__all__ = [
           "ALSWR",
           "BPMF",
           "LLORMA",
           "Baseline",
           "GlobalMean",
           "IAutoRec",
           "ItemMean",
           "LinearICFN",
           "SVDFeature",
           "UserItemBias",
]
