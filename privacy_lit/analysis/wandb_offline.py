"""Read the history of an *offline* W&B run (``wandb/offline-run-*/run-*.wandb``) without syncing.

Runs without an account are written offline (``privacy_lit.cli`` sets ``WANDB_MODE=offline``), and
``wandb sync`` needs a server. The run file is a LevelDB-style log of protobuf ``Record`` messages
(the layout W&B's own datastore writes: a 7-byte header ``:W&B``, 0xBEE1, version 0, then 32 KiB
blocks of chunks with a 7-byte header — CRC-32C, length, type FULL/FIRST/MIDDLE/LAST). This
module reads the ``history`` records back as dicts, so analysis and tests can use offline runs the
same way as a ``metrics.csv``. Checksums are not verified: a torn last record (a run still being
written) is dropped instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes, path: Path) -> Iterator[bytes]:
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"{path} is not a W&B run file: {len(data)} bytes")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file (header {ident!r}, magic {magic:#x})")
    if version != 0:
        raise ValueError(f"{path}: W&B run-file version {version} is not supported (0 is)")
    index, pending = _FILE_HEADER.size, b""
    while index + _CHUNK_HEADER.size <= len(data):
        left = _BLOCK - index % _BLOCK
        if left < _CHUNK_HEADER.size:  # block trailer padding
            index += left
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, index)
        index += _CHUNK_HEADER.size
        chunk = data[index : index + length]
        index += length
        if len(chunk) < length:
            return  # torn final chunk
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def run_file(run_dir: str | Path) -> Path:
    """The ``run-*.wandb`` file of an offline run directory."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected one run-*.wandb file in {run_dir}, found {[f.name for f in files]}"
        )
    return files[0]


def find_runs(root: str | Path) -> list[Path]:
    """Every offline run directory under ``root`` (``.../wandb/offline-run-*``), oldest first."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged rows of an offline run, in order; values decoded from their JSON.

    Media values come back as W&B's descriptors (dicts with ``_type`` and ``path``)."""
    from wandb.proto import wandb_internal_pb2 as pb  # only needed here, and heavy

    path = run_file(run_dir)
    rows = []
    for raw in _records(path.read_bytes(), path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            target = row
            for key in keys[:-1]:  # media are split into one item per field: nest them back
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def media_files(run_dir: str | Path) -> list[Path]:
    """Media written by the run (``files/media/**``), e.g. the sample grids' PNGs."""
    return sorted(p for p in (Path(run_dir) / "files" / "media").rglob("*") if p.is_file())
