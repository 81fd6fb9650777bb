"""Results rows of the comparison methods on disk, so a second run does not train their fresh
reviewers again.

Raw data, downsampling, the obfuscations, the surrogate and the white-box anonymizer do not depend
on the anonymizer a run trains, yet each costs a fresh reviewer (and the trained ones an
adversarial training) per run. Their rows are kept under a key of everything their figures depend
on: the method and its own settings, the evaluation protocol (reviewer architecture and epochs,
seed, prompt, scorer classes), the black box's :meth:`~privacy_lit.mllm.base.BlackBoxMLLM.
cache_identity`, the data config, and a digest of the exact reviewer train / test pixels and
labels. Any change of these misses; ``ROW_CACHE_FORMAT`` is bumped when the protocol's code
changes what a row would measure. Entries are JSON, written atomically (temporary file +
``os.replace``); an unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

ROW_CACHE_FORMAT = 1
"""Part of every key: bump it when the evaluation protocol's code changes what a row measures."""

log = logging.getLogger(__name__)


def tensor_digest(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes (the data a row was measured on)."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


class RowCache:
    """Rows by key in ``directory`` (one JSON file each)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """SHA-256 of the format and ``parts`` (JSON with sorted keys; values must be JSON-able)."""
        payload = json.dumps({"format": ROW_CACHE_FORMAT, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored row (a :class:`~privacy_lit.evaluation.Row` as a dict), or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            row = json.loads(path.read_text())["row"]
            if not isinstance(row, dict):
                raise TypeError(f"row is {type(row).__name__}")
            return row
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("row cache entry %s is unreadable (%s): evaluating again", path, error)
            return None

    def put(self, key: str, row: Mapping[str, Any], parts: Mapping[str, Any]) -> None:
        """Store ``row`` (with the key's ``parts``, so an entry says what it was measured on)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"row": dict(row), "parts": parts}
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, indent=2, default=str)
        os.replace(tmp, self._path(key))
