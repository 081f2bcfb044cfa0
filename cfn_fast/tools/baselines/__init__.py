"""The paper's baselines (Strub et al. 2016, Sec. 4.2), compact NumPy/SciPy implementations behind one
tiny interface (``fit(train) -> self``, ``predict_indices(users, items)``, ``score(test)``)."""
from .common import Baseline, GlobalMean, ItemMean, UserItemBias
from .als_wr import ALSWR
from .bpmf import BPMF
from .svdfeature import SVDFeature
from .llorma import LLORMA
from .autorec import IAutoRec
from .linear_cfn import LinearICFN

__all__ = ["Baseline", "GlobalMean", "ItemMean", "UserItemBias", "ALSWR", "BPMF", "SVDFeature", "LLORMA", "IAutoRec",
           "LinearICFN"]
