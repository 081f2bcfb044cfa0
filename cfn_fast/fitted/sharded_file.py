"""A model whose network is kept sharded, saved: a folder, never one file.

==========================  ==============================================================================
``<folder>/model.npz``      the model file of :mod:`cfn_fast.fitted.persistence` (format version 5) with every
                            entry but the layers; its config says ``"sharded_network": "network"``
``<folder>/network/``       the network's parts: ``manifest.json`` and ``shard-00000.npz`` …
                            (:mod:`cfn_fast.sharding.parts`), one file per shard, each checked when read
==========================  ==============================================================================

Saving never overwrites what it was not asked to: a folder is written beside the target and renamed into place, so
a reader sees the old model or the new one; a target that is a file, or a folder that is not a saved model, is
refused.  Reading checks the model file as any other, then the parts' manifest, then that both describe the same
network (inputs, hidden widths, side information).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from ..sharding.parts import PartStoreError, ShardedLayers
from .state import SHARDED_NETWORK_FOLDER
from .validation import ModelFileError
from .value import Fitted

__all__ = ["MODEL_FILE", "is_model_folder", "save_folder", "read_folder"]

MODEL_FILE = "model.npz"

ReadFile = Callable[[Path], "tuple[dict[str, Any], Fitted, dict[str, Any]]"]


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_FILE).is_file()


def _check_target(path: Path) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save the model: directory {str(path.parent)!r} does not exist")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} is a file; a model kept sharded saves as a folder: give a folder name")
    if path.is_dir() and any(path.iterdir()) and not is_model_folder(path):
        raise FileExistsError(f"{str(path)!r} is a folder that holds no saved cfn_fast model; give a new or empty "
                              f"folder (a model is never written over other files)")


def save_folder(path: str | os.PathLike, layers: ShardedLayers, write_file: Callable[[Path], Any]) -> Path:
    """Save a model kept sharded into the folder ``path``: its parts (``layers``) and its model file (written by
    ``write_file(target)``).  Returns ``path``."""
    path = Path(path)
    _check_target(path)
    if layers.folder is not None and layers.folder.resolve() == (path / SHARDED_NETWORK_FOLDER).resolve():
        write_file(path / MODEL_FILE)      # the parts were loaded from here, unchanged: the model file alone
        return path
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        layers.save(staging / SHARDED_NETWORK_FOLDER)
        write_file(staging / MODEL_FILE)
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
        if path.exists():
            os.replace(path, old)          # from here on a reader finds no model until the next line; never a half
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_folder(path: str | os.PathLike, read_file: ReadFile) -> tuple[dict[str, Any], Fitted, dict[str, Any]]:
    """``(params, fitted, config)`` of a folder :func:`save_folder` wrote; ``read_file`` reads its model file."""
    path = Path(path)
    if not is_model_folder(path):
        raise ModelFileError(f"{str(path)!r} is a folder but not a saved cfn_fast model (no {MODEL_FILE} in it)")
    params, fitted, config = read_file(path / MODEL_FILE)
    if config.get("sharded_network") != SHARDED_NETWORK_FOLDER:
        raise ModelFileError(f"{path / MODEL_FILE} is not the model file of a network kept sharded")
    try:
        layers = ShardedLayers.from_folder(path / SHARDED_NETWORK_FOLDER)
    except PartStoreError as exc:
        raise ModelFileError(f"{path} holds a damaged network: {exc}") from None
    net, layout = fitted.network, layers.layout
    hidden = (config.get("resolved") or {}).get("hidden")
    if (layout.n_inputs, layout.side_dim, len(layout.hidden) + 1) != (net.n_inputs, net.side_dim, config["n_layers"]) \
            or (hidden is not None and list(layout.hidden) != list(hidden)):
        raise ModelFileError(f"{path}: the network's parts ({layout.n_inputs} inputs, hidden {layout.hidden}, "
                             f"{layout.side_dim} side features) do not match its model file ({net.n_inputs} inputs, "
                             f"hidden {hidden}, {net.side_dim} side features)")
    net.layers = layers
    return params, fitted, config
