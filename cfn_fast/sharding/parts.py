"""A network kept sharded: its parts, made from the seed or read from a folder, never joined unless asked.

A network too large for one process (``CFN(shards=N, max_worker_bytes=…)`` whose whole network exceeds the cap)
never exists in one place: each shard's part (:func:`~cfn_fast.backends.shard_base.split_layers` layout: the first
layer's weight columns and the output layer's rows of its inputs, copies of the replicated arrays) is initialised
by :func:`init_part` from the seed alone, trained by its worker, and stored as one ``.npz`` per shard in a folder
with a manifest.  :class:`ShardedLayers` stands where an ordinary network keeps its list of layers
(``Network.layers``): it hands out one part at a time, and refuses, with :class:`NotGathered`, anything that needs
the whole network at once unless :meth:`ShardedLayers.gather` is called on purpose.

The folder (``manifest.json`` plus ``shard-00000.npz`` …, format below) is untrusted input when read back: the
manifest is checked before any file is opened, each file's size and SHA-256 against the manifest and its arrays'
headers against the layout before an array is read, and never with pickles.

``manifest.json``: ``{"format": "cfn_fast-sharded-network", "version": 1, "n_inputs": int, "hidden": [int, …],
"side_dim": int, "bounds": [[lo, hi], …], "files": [{"name": "shard-00000.npz", "bytes": int, "sha256": hex}, …]}``;
each shard file holds ``layer{k}_weight``, ``layer{k}_bias`` and, with side information, ``layer{k}_side_weight``
(float32, the part's shapes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, overload

import numpy as np

from ..backends.shard_base import join_layers, shard_bounds
from ..network import Layer, layer_sizes

__all__ = ["PartLayout", "ShardedLayers", "NotGathered", "PartStoreError", "init_part", "part_arrays",
           "part_from_file", "write_part", "write_manifest", "copy_store", "MANIFEST", "part_file_name"]

MANIFEST = "manifest.json"
FORMAT = "cfn_fast-sharded-network"
VERSION = 1
_PART_NAME = re.compile(r"shard-(\d{5})\.npz$")
_SHA256 = re.compile(r"[0-9a-f]{64}$")


class NotGathered(ValueError):
    """The whole network of a model kept sharded was asked for (it does not fit one process)."""


class PartStoreError(ValueError):
    """A folder of shard parts is damaged or does not match its manifest."""


@dataclass(frozen=True)
class PartLayout:
    """The shape of a sharded network: ``n_inputs`` inputs split at ``bounds``, ``hidden`` widths, ``side_dim``."""

    n_inputs: int
    hidden: tuple[int, ...]
    side_dim: int
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def even(cls, n_inputs: int, hidden: Sequence[int], side_dim: int, shards: int) -> "PartLayout":
        """The layout sharded training uses (:func:`~cfn_fast.backends.shard_base.shard_bounds`)."""
        return cls(int(n_inputs), tuple(int(h) for h in hidden), int(side_dim),
                   tuple((int(lo), int(hi)) for lo, hi in shard_bounds(n_inputs, shards)))

    @property
    def shards(self) -> int:
        return len(self.bounds)

    def part_shapes(self, rank: int) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]]:
        """``(weight, bias, side_weight)`` shapes of each layer of shard ``rank``'s part."""
        lo, hi = self.bounds[rank]
        width, shapes = hi - lo, []
        sizes = layer_sizes(self.n_inputs, self.hidden)
        for k, (fan_in, fan_out) in enumerate(sizes):
            if k == 0:
                fan_in = width
            if k == len(sizes) - 1:
                fan_out = width
            shapes.append(((fan_out, fan_in), (fan_out,), (fan_out, self.side_dim) if self.side_dim else None))
        return shapes

    def nbytes(self) -> int:
        """float32 bytes of the whole network."""
        return 4 * sum(fan_out * (fan_in + 1 + self.side_dim) for fan_in, fan_out in layer_sizes(self.n_inputs,
                                                                                               self.hidden))

    def shard_of(self, inputs: np.ndarray) -> np.ndarray:
        """The rank of the shard holding each input index."""
        starts = np.array([lo for lo, _ in self.bounds], dtype=np.int64)
        return np.searchsorted(starts, np.asarray(inputs, dtype=np.int64), side="right") - 1

    def as_json(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "hidden": list(self.hidden), "side_dim": self.side_dim,
                "bounds": [list(b) for b in self.bounds]}


# ---------------------------------------------------------------- initialisation without the whole network
def init_part(layout: PartLayout, rank: int, seed: int) -> list[Layer]:
    """Shard ``rank``'s part of ``init_layers(n_inputs, hidden, side_dim, seed)``, bit for bit, without drawing the
    rest: :func:`~cfn_fast.network.init_layers` draws every array from one PCG64 stream, one 64-bit draw per value,
    in a fixed order (per layer: weight row by row, bias, side weight), so each slice starts at a known position
    that ``PCG64.advance`` jumps to."""
    lo, hi = layout.bounds[rank]
    base = np.random.PCG64(seed).state
    sizes = layer_sizes(layout.n_inputs, layout.hidden)
    position, part = 0, []
    for k, (fan_in, fan_out) in enumerate(sizes):
        draw = _uniform_draws(base, 1.0 / np.sqrt(fan_in + layout.side_dim))
        weight_at, bias_at = position, position + fan_out * fan_in
        side_at = bias_at + fan_out
        position = side_at + fan_out * layout.side_dim
        side_dim = layout.side_dim
        if k == 0:                                           # this shard's columns of every row
            weight = np.stack([draw(weight_at + row * fan_in + lo, hi - lo) for row in range(fan_out)]) \
                if hi > lo else np.zeros((fan_out, 0), np.float32)
            rows = (0, fan_out)
        else:
            rows = (lo, hi) if k == len(sizes) - 1 else (0, fan_out)
            weight = draw(weight_at + rows[0] * fan_in, (rows[1] - rows[0]) * fan_in).reshape(-1, fan_in)
        bias = draw(bias_at + rows[0], rows[1] - rows[0])
        side = draw(side_at + rows[0] * side_dim, (rows[1] - rows[0]) * side_dim).reshape(-1, side_dim) \
            if side_dim else None
        part.append(Layer(weight, bias, side))
    return part


def _uniform_draws(state: dict[str, Any], bound: float) -> Callable[[int, int], np.ndarray]:
    """``draw(start, count)``: the ``count`` values uniform in ±``bound`` that the stream in ``state`` yields from
    draw number ``start`` on, as float32 (what ``Generator.uniform(...).astype(np.float32)`` gives there)."""
    def draw(start: int, count: int) -> np.ndarray:
        stream = np.random.PCG64()
        stream.state = state
        stream.advance(start)
        return np.random.Generator(stream).uniform(-bound, bound, count).astype(np.float32)
    return draw


# ---------------------------------------------------------------- one part as plain arrays
def part_arrays(part: Sequence[Layer]) -> dict[str, np.ndarray]:
    """The arrays of a part under the names its file uses (``layer{k}_weight|bias|side_weight``)."""
    return {f"layer{k}_{name}": value for k, layer in enumerate(part)
            for name, value in (("weight", layer.weight), ("bias", layer.bias), ("side_weight", layer.side_weight))
            if value is not None}


def _header_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an ``.npz`` from its headers alone (nothing allocated from them)."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise PartStoreError(f"{path}: unexpected entry {info.filename!r}")
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                reader = {(1, 0): np.lib.format.read_array_header_1_0,
                          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if reader is None:
                    raise PartStoreError(f"{path}: {info.filename} has .npy format version {version}")
                shape, fortran, dtype = reader(handle)
                if fortran:
                    raise PartStoreError(f"{path}: {info.filename} is stored in Fortran order")
            found[info.filename[:-4]] = (tuple(shape), dtype)
    return found


def part_from_file(path: str | os.PathLike, shapes: Sequence[tuple[Any, Any, Any]]) -> list[Layer]:
    """The part stored at ``path``, its arrays checked against ``shapes`` (:meth:`PartLayout.part_shapes`) from
    the file's headers before any is read, and finite."""
    path = Path(path)
    expected = {}
    for k, (weight, bias, side) in enumerate(shapes):
        expected.update({f"layer{k}_weight": weight, f"layer{k}_bias": bias})
        if side is not None:
            expected[f"layer{k}_side_weight"] = side
    try:
        headers = _header_shapes(path)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise PartStoreError(f"{path} is not a readable shard part ({exc})") from None
    extra = sorted(set(headers) - set(expected) - {"epoch", "n_layers"})
    missing = sorted(set(expected) - set(headers))
    if missing or extra:
        raise PartStoreError(f"{path}: arrays {missing} missing, {extra} unexpected for this network's part")
    for name, shape in expected.items():
        if headers[name] != (tuple(shape), np.dtype(np.float32)):
            raise PartStoreError(f"{path}: {name} must be float32 of shape {tuple(shape)}, got "
                                 f"{headers[name][1]} of shape {headers[name][0]}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: np.array(data[name]) for name in expected}
    for name, value in arrays.items():
        if not np.all(np.isfinite(value)):
            raise PartStoreError(f"{path}: {name} has NaN or infinite values")
    return [Layer(arrays[f"layer{k}_weight"], arrays[f"layer{k}_bias"], arrays.get(f"layer{k}_side_weight"))
            for k in range(len(shapes))]


def part_file_name(rank: int) -> str:
    return f"shard-{rank:05d}.npz"


def write_part(folder: str | os.PathLike, rank: int, part: Sequence[Layer]) -> Path:
    """Write shard ``rank``'s part into ``folder`` atomically (a temporary file renamed into place)."""
    path = Path(folder) / part_file_name(rank)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **part_arrays(part))
    os.replace(tmp, path)
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike, layout: PartLayout) -> Path:
    """The manifest of ``folder`` once every shard's part is written there: the layout, each file's size and
    SHA-256.  Written last and atomically, so a folder with a manifest is complete."""
    folder = Path(folder)
    files = []
    for rank in range(layout.shards):
        path = folder / part_file_name(rank)
        if not path.is_file():
            raise PartStoreError(f"{path} is missing: every shard writes its part before the manifest")
        files.append({"name": path.name, "bytes": path.stat().st_size, "sha256": _file_digest(path)})
    manifest = {"format": FORMAT, "version": VERSION, **layout.as_json(), "files": files}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def copy_store(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a complete folder of parts (its manifest and shard files, nothing else) into ``target``."""
    source, target = Path(source), Path(target)
    files = read_manifest(source)[1]
    target.mkdir(parents=True, exist_ok=True)
    for entry in files:
        shutil.copyfile(source / entry["name"], target / (entry["name"] + ".tmp"))
        os.replace(target / (entry["name"] + ".tmp"), target / entry["name"])
    shutil.copyfile(source / MANIFEST, target / (MANIFEST + ".tmp"))
    os.replace(target / (MANIFEST + ".tmp"), target / MANIFEST)
    return target


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise PartStoreError(f"manifest: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def read_manifest(folder: str | os.PathLike) -> tuple[PartLayout, list[dict[str, Any]]]:
    """The layout and file entries of ``folder``'s manifest, every field checked (:class:`PartStoreError`)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PartStoreError(f"{path} is not a readable manifest of a sharded network ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PartStoreError(f"{path} is not the manifest of a cfn_fast sharded network")
    if manifest.get("version") != VERSION:
        raise PartStoreError(f"{path}: format version {manifest.get('version')!r}; this cfn_fast reads {VERSION}")
    n_inputs = _positive_int(manifest.get("n_inputs"), "n_inputs")
    hidden = manifest.get("hidden")
    if not isinstance(hidden, list) or not hidden:
        raise PartStoreError(f"manifest: hidden must be a non-empty list of widths, got {hidden!r}")
    hidden = tuple(_positive_int(h, "each hidden width") for h in hidden)
    side_dim = _positive_int(manifest.get("side_dim"), "side_dim", 0)
    bounds, files = manifest.get("bounds"), manifest.get("files")
    if not isinstance(bounds, list) or not bounds or not isinstance(files, list) or len(files) != len(bounds):
        raise PartStoreError("manifest: bounds and files must be lists of one entry per shard")
    start = 0
    for entry in bounds:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == start and
                type(entry[1]) is int and entry[1] > start):
            raise PartStoreError(f"manifest: bounds must split [0, {n_inputs}) into consecutive non-empty ranges, "
                                 f"got {bounds!r}")
        start = entry[1]
    if start != n_inputs:
        raise PartStoreError(f"manifest: bounds end at {start}, not at n_inputs={n_inputs}")
    for rank, entry in enumerate(files):
        if not (isinstance(entry, dict) and entry.get("name") == part_file_name(rank) and
                type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), str) and
                _SHA256.match(entry["sha256"])):
            raise PartStoreError(f"manifest: file entry {rank} must be {{'name': {part_file_name(rank)!r}, "
                                 f"'bytes': int, 'sha256': hex}}, got {entry!r}")
    layout = PartLayout(n_inputs, hidden, side_dim, tuple((lo, hi) for lo, hi in bounds))
    return layout, files


# ---------------------------------------------------------------- the stand-in for Network.layers
class ShardedLayers(Sequence[Layer]):
    """The layers of a network kept sharded: ``part(rank)`` loads one shard's part (a fresh copy); ``gather()``
    joins them all (it needs the whole network's memory).  Indexing or iterating raises :class:`NotGathered`,
    so code written for a whole network fails with a clear error instead of building it by accident."""

    def __init__(self, layout: PartLayout, load: Callable[[int], list[Layer]], folder: Path | None = None,
                 origin: str = "") -> None:
        self.layout, self.load, self.folder, self.origin = layout, load, folder, origin

    # -- constructors
    @classmethod
    def initial(cls, layout: PartLayout, seed: int) -> "ShardedLayers":
        """The freshly initialised network of ``seed`` (:func:`init_part`)."""
        return cls(layout, lambda rank: init_part(layout, rank, seed), origin=f"initialised from seed {seed}")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ShardedLayers":
        """The parts stored in ``folder``: the manifest checked now, each file's SHA-256 the first time its part
        is loaded (then only its size; its arrays' headers and values on every load)."""
        folder = Path(folder)
        layout, files = read_manifest(folder)
        for entry in files:
            path = folder / entry["name"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                raise PartStoreError(f"{path} is missing or not the {entry['bytes']:,} bytes its manifest says")
        digests = {rank: entry["sha256"] for rank, entry in enumerate(files)}
        sizes = {rank: entry["bytes"] for rank, entry in enumerate(files)}
        verified: set[int] = set()      # ranks whose file matched its SHA-256 once (inference loads every part
        #                                 on every call: hashing each time would cost a full read more per call)

        def load(rank: int) -> list[Layer]:
            path = folder / part_file_name(rank)
            if rank not in verified:
                if _file_digest(path) != digests[rank]:
                    raise PartStoreError(f"{path} does not match its SHA-256 in the manifest (damaged or edited)")
                verified.add(rank)
            elif not path.is_file() or path.stat().st_size != sizes[rank]:   # replaced since: a cheap check
                raise PartStoreError(f"{path} is missing or not the {sizes[rank]:,} bytes its manifest says")
            return part_from_file(path, layout.part_shapes(rank))

        return cls(layout, load, folder, origin=f"stored in {folder}")

    # -- what a sharded network offers
    @property
    def hidden(self) -> tuple[int, ...]:
        return self.layout.hidden

    @property
    def shards(self) -> int:
        return self.layout.shards

    def part(self, rank: int) -> list[Layer]:
        if not 0 <= rank < self.shards:
            raise IndexError(f"shard {rank} is not in [0, {self.shards})")
        return self.load(rank)

    def parts(self) -> Iterator[tuple[int, tuple[int, int], list[Layer]]]:
        """``(rank, (lo, hi), part)`` of each shard in order, one part in memory at a time."""
        for rank, bounds in enumerate(self.layout.bounds):
            yield rank, bounds, self.part(rank)

    def gather(self) -> list[Layer]:
        """The whole network (:func:`~cfn_fast.backends.shard_base.join_layers`): ``layout.nbytes()`` bytes."""
        return join_layers([part for _, _, part in self.parts()])

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the parts and the manifest into ``folder`` (copied when they are stored already)."""
        folder = Path(folder)
        if self.folder is not None:
            if self.folder.resolve() == folder.resolve():
                return folder
            return copy_store(self.folder, folder)
        folder.mkdir(parents=True, exist_ok=True)
        for rank, _, part in self.parts():
            write_part(folder, rank, part)
        return write_manifest(folder, self.layout).parent

    # -- the Sequence protocol, refused
    def __len__(self) -> int:
        return len(self.layout.hidden) + 1

    def refusal(self, action: str = "this needs the whole network") -> NotGathered:
        layout = self.layout
        return NotGathered(
            f"{action}, but this model is kept sharded: its network ({layout.n_inputs:,} inputs, hidden "
            f"{layout.hidden}, {layout.nbytes():,} bytes) is split over {layout.shards} shards because it exceeds "
            f"max_worker_bytes. Gather it first where it fits: model.gather() makes it an ordinary model")

    @overload
    def __getitem__(self, index: int) -> Layer: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Layer]: ...

    def __getitem__(self, index: Any) -> Any:
        raise self.refusal()

    def __iter__(self) -> Iterator[Layer]:
        raise self.refusal()

    def __repr__(self) -> str:
        return (f"ShardedLayers({self.layout.n_inputs} inputs, hidden {self.layout.hidden}, {self.shards} shards, "
                f"{self.origin})")
