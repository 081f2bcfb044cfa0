"""Per-kind default hyper-parameters of :class:`cfn_fast.CFN`, and how they adapt to the data.

Chosen on a validation split carved from the ML-1M training set (90/10 split, seed 0),
never on the test set; the search and its results are described in the README.  Starting
points were the authors' shipped ML-1M configurations (tutorial I-CFN, layer-1 U-CFN); a
random search over lr, decay, λ, α, β, masking and batch size found nothing better, and a
local search around the starting points moved λ (item) and β (user):

    I-CFN val RMSE 0.8495 -> 0.8482 (weight_decay 0.05 -> 0.04)
    U-CFN val RMSE 0.8676 -> 0.8636 (beta 0.72 -> 0.5)

Density-aware step (:func:`density_step_factor`)
------------------------------------------------
The loss of a sample is a *sum* over its known entries (α·Σ masked + β·Σ visible), so the
back-propagated error reaching the code layer is ``δh = Wᵀ e`` summed over the ``k`` known
outputs of the sample, and each first-layer column receives ``δh · x_j`` from each of the
``k`` known inputs.  With errors of no fixed sign the norm of that sum grows like ``√k``
(like ``k`` when the errors agree, as in the first epochs where every output is off in the
same direction).  A step tuned at ML-1M's ``k_ref`` known entries per sample is therefore
``√(k / k_ref)`` to ``k / k_ref`` times too large on a denser set: on 5,000 users x 100 items
(about 3,600 ratings per item) the ML-1M step diverges within 3 epochs.

The default step is therefore ``lr · min(1, √(k_ref / k̄))`` with ``k̄`` the mean number of
known entries per (non-empty) training sample.  The square root is the incoherent-error
rate; the sweep (``bench/sweep_defaults.py``) shows it is enough from 2 to 5,000 known
entries per sample, while the linear rate needlessly slows dense sets.  The factor is capped at 1 —
sparser data never gets a larger step than ML-1M's: its gradients are smaller, so the
ML-1M step is already safe there, and a larger one bought nothing on the sweep's sparse
sets (their limit is the information per sample, not the step).  ``k_ref`` per kind is set
a little above ML-1M's own density (243.6 ratings per item and 149.0 per user on the 90 %
training split, seed 0), so that ML-1M and ML-100K (54 / 95) keep exactly the tuned step;
ML-10M's I-CFN (about 840 ratings per item) gets 0.6x of it, its U-CFN (about 130) all of it.  Weight decay is applied per step and therefore shrinks with the step; the
hidden width does not enter: the initialisation already scales weights by ``1/√fan_in``.

An explicit ``lr`` is always used exactly as given, so the paper's settings stay reachable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KindDefaults", "DEFAULTS", "REFERENCE_KNOWN_PER_SAMPLE", "density_step_factor", "choose_kind",
           "AUTO_MIN_SAMPLES"]


@dataclass(frozen=True)
class KindDefaults:
    alpha: float          # loss weight of masked known entries
    beta: float           # loss weight of visible known entries
    mask_ratio: float     # probability of masking a known input entry
    lr: float             # initial learning rate
    lr_decay: float       # lr_t = lr / (1 + t * lr_decay)
    weight_decay: float   # λ on every parameter
    batch_size: int


DEFAULTS: dict[str, KindDefaults] = {
    "item": KindDefaults(alpha=1.0, beta=0.5, mask_ratio=0.25, lr=0.07, lr_decay=0.3, weight_decay=0.04,
                         batch_size=35),
    "user": KindDefaults(alpha=1.1, beta=0.5, mask_ratio=0.15, lr=0.09, lr_decay=0.18, weight_decay=0.025,
                         batch_size=35),
}

#: Mean known entries per training sample up to which the tuned ``lr`` is used unchanged
#: (ML-1M's 90 % training split has about 243 per item and 149 per user).
REFERENCE_KNOWN_PER_SAMPLE: dict[str, float] = {"item": 300.0, "user": 200.0}


def density_step_factor(kind: str, known_per_sample: float) -> float:
    """Multiplier of the default ``lr`` for data with ``known_per_sample`` mean known entries per
    sample: ``min(1, √(k_ref / k̄))`` (see the module docstring for the derivation)."""
    if not known_per_sample > 0:
        return 1.0
    return min(1.0, math.sqrt(REFERENCE_KNOWN_PER_SAMPLE[kind] / float(known_per_sample)))


#: Fewest samples the better-observed side needs before the shape rule (``kind="auto"`` on sets too small
#: to validate) trains on it: below this an epoch has under ~30 mini-batches of the default size and that
#: autoencoder underfits.
AUTO_MIN_SAMPLES = 1000


def choose_kind(n_users: int, n_items: int, n_ratings: int) -> str:
    """The shape rule ``CFN(kind="auto")`` falls back on when a set is too small for its validation
    run (:mod:`cfn_fast.selection`): the side whose samples are better observed, unless it has too
    few samples.

    Rule: the better-observed side is the one with fewer rows (I-CFN's samples are items with
    ``n_ratings / n_items`` known entries each, U-CFN's users with ``n_ratings / n_users``);
    ties go to items.  If that side has at least ``AUTO_MIN_SAMPLES`` rows (or both sides have
    as many), train it; else train the other side (more samples of a shorter input).

    Why: a sample is reconstructed from its own known entries, so the denser side learns more
    (the paper's I-CFN wins on ML-1M, 243 ratings per item against 149 per user); but with few
    samples (e.g. 5,600 users x 30 items) that autoencoder sees only a handful of mini-batches
    per epoch and the other kind wins by far.  A rule of the shape alone cannot see the rest
    (which centring wins, ML-100K's near tie), hence the validation run on any set large enough
    to hold one.  ``n_ratings`` is accepted for future rules and ignored.
    """
    del n_ratings
    denser, other, n_denser = ("item", "user", n_items) if n_items <= n_users else ("user", "item", n_users)
    if n_denser >= AUTO_MIN_SAMPLES or n_users == n_items:  # a square set has no side with more samples
        return denser
    return other
