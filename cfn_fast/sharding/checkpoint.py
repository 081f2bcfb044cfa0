"""Per-shard checkpoints: one ``.npz`` per shard and epoch, plain arrays (never pickles), written atomically.

A run rolls back to the last epoch that *every* shard checkpointed (:func:`last_common_epoch`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..network import Layer
from .parts import part_arrays

__all__ = ["save_part", "load_part", "last_common_epoch", "checkpoint_path"]

_NAME = re.compile(r"shard(\d+)-epoch(\d+)\.npz$")


def checkpoint_path(folder: str | os.PathLike, rank: int, epoch: int) -> Path:
    return Path(folder) / f"shard{rank}-epoch{epoch}.npz"


def save_part(folder: str | os.PathLike, rank: int, epoch: int, part: Sequence[Layer], keep: int | None = 2
              ) -> Path:
    """Write shard ``rank``'s part after ``epoch`` (a temporary file renamed into place: a reader never sees half
    a file), then delete this shard's checkpoints older than the last ``keep`` (None: keep them all)."""
    path = checkpoint_path(folder, rank, epoch)
    arrays = part_arrays(part)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, epoch=np.int64(epoch), n_layers=np.int64(len(part)), **arrays)
    os.replace(tmp, path)
    for old in (sorted(_epochs_of(folder, rank))[:-keep] if keep else []):
        checkpoint_path(folder, rank, old).unlink(missing_ok=True)
    return path


def load_part(folder: str | os.PathLike, rank: int, epoch: int, like: Sequence[Layer]) -> list[Layer]:
    """Shard ``rank``'s part saved after ``epoch``, checked against the shapes of ``like`` (the part it replaces)."""
    path = checkpoint_path(folder, rank, epoch)
    with np.load(path, allow_pickle=False) as data:
        if int(data["epoch"]) != epoch or int(data["n_layers"]) != len(like):
            raise ValueError(f"{path} is not shard {rank}'s checkpoint of epoch {epoch} for this network")
        part = []
        for k, layer in enumerate(like):
            arrays = {}
            for name in ("weight", "bias", "side_weight"):
                expected = getattr(layer, name)
                key = f"layer{k}_{name}"
                if expected is None:
                    arrays[name] = None
                    continue
                value = data[key] if key in data.files else None
                if value is None or value.shape != expected.shape or value.dtype != np.float32:
                    raise ValueError(f"{path}: {key} must be float32 of shape {expected.shape}")
                arrays[name] = np.array(value)
            part.append(Layer(**arrays))
    return part


def _epochs_of(folder: str | os.PathLike, rank: int) -> list[int]:
    found = []
    for path in Path(folder).glob(f"shard{rank}-epoch*.npz"):
        match = _NAME.search(path.name)
        if match and int(match.group(1)) == rank:
            found.append(int(match.group(2)))
    return found


def last_common_epoch(folder: str | os.PathLike, shards: int) -> int | None:
    """The last epoch every shard checkpointed, or None."""
    common = set(_epochs_of(folder, 0))
    for rank in range(1, shards):
        common &= set(_epochs_of(folder, rank))
    return max(common) if common else None
