"""The paper's published figures (Strub, Mary & Gaudel 2016, arXiv 1606.07659v3), as numbers.

Only what the paper prints is here; figures it shows only as plots (Fig. 3, 4, 5) have no
numbers and are not invented.
"""
from __future__ import annotations

__all__ = ["LATER_RESULTS", "LINEAR_ICFN", "PAPER", "TABLE1", "TABLE1_CI", "TABLE2", "TABLE3"]

PAPER = "Strub, Mary & Gaudel 2016, 'Hybrid Recommender System based on Autoencoders' (arXiv 1606.07659v3)"

#: Table 1: RMSE on 90/10 splits (mean; the ± 95% half-width is in TABLE1_CI).
TABLE1: dict[str, dict[str, float | None]] = {
    "BPMF": {"ml-1m": 0.8705, "ml-10m": 0.8213, "ml-20m": 0.8123, "douban": 0.7133},
    "ALS-WR": {"ml-1m": 0.8433, "ml-10m": 0.7830, "ml-20m": 0.7746, "douban": 0.7010},
    "SVDFeature": {"ml-1m": 0.8631, "ml-10m": 0.7907, "ml-20m": 0.7852, "douban": None},
    "LLORMA": {"ml-1m": 0.8371, "ml-10m": 0.7949, "ml-20m": 0.7843, "douban": 0.6968},
    "I-AutoRec": {"ml-1m": 0.8305, "ml-10m": 0.7831, "ml-20m": 0.7742, "douban": 0.6945},
    "U-CFN": {"ml-1m": 0.8574, "ml-10m": 0.7954, "ml-20m": 0.7856, "douban": 0.7049},
    "U-CFN++": {"ml-1m": 0.8572, "ml-10m": None, "ml-20m": None, "douban": 0.7050},
    "I-CFN": {"ml-1m": 0.8321, "ml-10m": 0.7767, "ml-20m": 0.7663, "douban": 0.6911},
    "I-CFN++": {"ml-1m": 0.8316, "ml-10m": 0.7754, "ml-20m": 0.7652, "douban": None},
}
TABLE1_CI: dict[str, dict[str, float | None]] = {
    "BPMF": {"ml-1m": 4.3e-3, "ml-10m": 6.5e-4, "ml-20m": 3.5e-4, "douban": 3.0e-4},
    "ALS-WR": {"ml-1m": 1.8e-3, "ml-10m": 1.9e-4, "ml-20m": 2.7e-4, "douban": 3.2e-4},
    "SVDFeature": {"ml-1m": 2.5e-3, "ml-10m": 8.4e-4, "ml-20m": 5.4e-4, "douban": None},
    "LLORMA": {"ml-1m": 2.4e-3, "ml-10m": 2.3e-4, "ml-20m": 3.2e-4, "douban": 2.7e-4},
    "I-AutoRec": {"ml-1m": 2.8e-3, "ml-10m": 2.4e-4, "ml-20m": 4.4e-4, "douban": 3.1e-4},
    "U-CFN": {"ml-1m": 2.4e-3, "ml-10m": 7.4e-4, "ml-20m": 1.4e-4, "douban": 2.2e-4},
    "U-CFN++": {"ml-1m": 1.6e-3, "ml-10m": None, "ml-20m": None, "douban": 1.2e-4},
    "I-CFN": {"ml-1m": 2.5e-3, "ml-10m": 5.4e-4, "ml-20m": 2.9e-4, "douban": 3.2e-4},
    "I-CFN++": {"ml-1m": 1.9e-3, "ml-10m": 6.3e-4, "ml-20m": 2.3e-4, "douban": None},
}

#: Table 2 (ML-10M only): RMSE by item-popularity bucket, I-CFN vs I-CFN++.
TABLE2: dict[str, dict[str, dict[str, float]]] = {
    "90/10": {"I-CFN": {"0-20%": 0.9539, "20-40%": 0.8815, "40-60%": 0.8487, "60-80%": 0.8139, "80-100%": 0.7674,
                        "full": 0.7767},
              "I-CFN++": {"0-20%": 0.9444, "20-40%": 0.8730, "40-60%": 0.8408, "60-80%": 0.8110, "80-100%": 0.7669,
                          "full": 0.7756}},
    "50/50": {"I-CFN": {"0-20%": 1.0030, "20-40%": 0.9188, "40-60%": 0.8748, "60-80%": 0.8473, "80-100%": 0.7976,
                        "full": 0.8075},
              "I-CFN++": {"0-20%": 0.9938, "20-40%": 0.9084, "40-60%": 0.8669, "60-80%": 0.8420, "80-100%": 0.7964,
                          "full": 0.8055}},
}

#: Table 3: 2-layer CFN (one hidden layer of ~700 units), 20 epochs on a GTX 980.
TABLE3: dict[str, dict[str, dict[str, object]]] = {
    "user": {"ml-1m": {"params": "5M", "seconds": 7 * 60 + 17, "mib": 262},
             "ml-10m": {"params": "15M", "seconds": 34 * 60 + 51, "mib": 543},
             "ml-20m": {"params": "38M", "seconds": 59 * 60 + 35, "mib": 1044}},
    "item": {"ml-1m": {"params": "8M", "seconds": 2 * 60 + 3, "mib": 250},
             "ml-10m": {"params": "100M", "seconds": 18 * 60 + 34, "mib": 1532},
             "ml-20m": {"params": "194M", "seconds": 34 * 60 + 45, "mib": 2905}},
}
#: Hidden width that reproduces Table 3's parameter counts (e.g. I-CFN ML-20M: 2·138,493·700 ≈ 194M).
TABLE3_HIDDEN = 700

#: Linear I-CFN on ML-10M (Sec. 4.3): 0.8151 ± 1.4e-3.
LINEAR_ICFN = {"ml-10m": (0.8151, 1.4e-3)}

#: Later results quoted in the spec sheet (no timing information).
LATER_RESULTS = {"ml-1m": {"GLocal-K": 0.8227, "Sparse FC": 0.824, "CF-NADE": 0.829, "GC-MC": 0.832},
                 "ml-10m": {"MRMA": 0.7634, "Sparse FC": 0.769, "CF-NADE": 0.771}}
