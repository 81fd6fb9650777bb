"""An on-disk response cache in front of any backend: the same question is never paid twice.

A rerun of an evaluation, a resumed run, or a step that asks about pixels already asked about
(deterministic generation returns the same answer) is served from disk. A hit is not a call: it
counts in ``stats.cache_hits`` and costs nothing.

The key is a SHA-256 of the backend's :meth:`~privacy_lit.mllm.base.BlackBoxMLLM.cache_identity`
(model, generation settings, pixel encoding), the prompt, and the exact pixel bytes with their
dtype and shape. One JSON file per entry (``<dir>/<key[:2]>/<key>.json``), written to a temporary
file in the same folder and moved into place with ``os.replace``: a crash leaves either the old
state or the complete entry, never half of one, and concurrent writers (several runs, DDP ranks)
never see each other's partial files. An entry that is unreadable anyway (a disk error, an edited
file) is treated as a miss and rewritten.

Beside the entries, :class:`QueryLedger` keeps ``<dir>/ledger.jsonl``: one JSON line per answered
(paid) query — its key, time, run, stage, tokens and dollars — and one per cache hit, appended
and flushed to the disk as each answer arrives, before the answer is used or cached. Whatever
happens to the process afterwards, a paid query stays on record: a resumed run takes its
:class:`~privacy_lit.mllm.base.QueryStats` (and so its budget) from the ledger, not from the
counters its checkpoint saved, and ``python -m privacy_lit usage RUN`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privacy_lit.mllm.base import (
    Answer,
    BatchError,
    BlackBoxMLLM,
    OnAnswer,
    QueryStats,
    Request,
    sanitized,
)

CACHE_FORMAT = 1
"""Part of every key: bump it when the key or entry layout changes, so old entries miss."""

log = logging.getLogger(__name__)


class ResponseCache:
    """Answers on disk by key. Thread- and process-safe for readers and writers.

    Args:
        directory: where entries live (created on first write).
        fsync: flush each entry to the disk before it replaces anything, so a power cut cannot
            leave an empty entry behind (an unreadable one would only be a miss; this saves
            paying for it again).
    """

    def __init__(self, directory: str | Path, fsync: bool = True):
        self.directory = Path(directory)
        self.fsync = fsync

    @staticmethod
    def key(identity: Mapping[str, object], request: Request) -> str:
        """SHA-256 of (format, backend identity, prompt, pixel dtype, shape and bytes)."""
        pixels = np.ascontiguousarray(request.visual.detach().cpu().numpy())
        digest = hashlib.sha256()
        header = {
            "format": CACHE_FORMAT,
            "identity": identity,
            "prompt": request.prompt,
            "dtype": str(pixels.dtype),
            "shape": list(pixels.shape),
        }
        digest.update(json.dumps(header, sort_keys=True, default=repr).encode())
        digest.update(b"\0")
        digest.update(memoryview(pixels).cast("B"))
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Answer | None:
        """The stored answer, or None (missing or unreadable: both mean ask again)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] != key:
                raise ValueError(f"entry holds key {entry['key']}")
            # entries written before answers were sanitised may hold what a tokenizer rejects
            return sanitized(Answer(str(entry["text"]), entry.get("option_scores")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable cache entry %s (%s): asking again", path, error)
            return None

    def put(self, key: str, answer: Answer, meta: Mapping[str, Any] | None = None) -> None:
        """Store ``answer`` atomically: a temporary file in the entry's folder, then a rename."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "text": answer.text,
            "option_scores": answer.option_scores,
            "created": time.time(),
            **(meta or {}),
        }
        # dot-prefixed and ``.tmp``: never mistaken for an entry, and unique per writer
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(entry, file, default=repr)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by writers that crashed; returns how many. Recent ones
        may belong to a writer still running, so only those older than ``older_than_s`` go."""
        cutoff = time.time() - older_than_s
        removed = 0
        for tmp in self.directory.glob("??/.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


LEDGER_NAME = "ledger.jsonl"


def _rank() -> int:
    """This process's rank under torch.distributed (0 without it): ranks share one ledger."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class QueryLedger:
    """The append-only record of every answered query and cache hit, one JSON line each.

    A line is written with a single ``write`` on a file opened for appending (``O_APPEND``), so
    several processes (DDP ranks, runs sharing a cache) can append to one ledger without
    interleaving, and flushed (``fsync``) before :meth:`paid` returns. A line cut short by a
    crash is skipped when reading.

    Args:
        path: the ledger file (created on the first record).
        run: the training run the records belong to (a fresh id by default). A run resumed from
            a checkpoint takes the id back, so its totals include what was paid after the
            checkpoint and before the process died.
        fsync: flush every paid record to the disk (hits are not money: only written).
    """

    def __init__(self, path: str | Path, run: str | None = None, fsync: bool = True):
        self.path = Path(path)
        self.run = run or uuid.uuid4().hex
        self.fsync = fsync
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # a copy opens its own descriptor

    def _write(self, record: Mapping[str, Any], sync: bool) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a line cut by a crash ends there, not in this record
        os.write(self._fd, line)
        if sync and self.fsync:
            os.fsync(self._fd)

    def paid(self, key: str, answer: Answer, stage: str) -> None:
        """Record an answered query (on the disk when this returns)."""
        self._write(
            {
                "kind": "paid",
                "run": self.run,
                "rank": _rank(),
                "key": key,
                "time": time.time(),
                "stage": stage,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "cost_usd": answer.cost_usd,
            },
            sync=True,
        )

    def hit(self, key: str, stage: str) -> None:
        """Record a query served from the cache."""
        record = {"kind": "hit", "run": self.run, "rank": _rank(), "key": key,
                  "time": time.time(), "stage": stage}  # fmt: skip
        self._write(record, sync=False)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in the order written."""
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                try:
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("kind") in ("paid", "hit"):
                        yield record
                        continue
                except ValueError:
                    pass
                log.warning("%s line %d is not a ledger record (cut by a crash?): skipped",
                            self.path, number)  # fmt: skip

    def totals(self, run: str | None = None, rank: int | None = None) -> QueryStats:
        """Calls (per stage), cache hits, tokens and dollars of ``run`` (None: every run),
        of one ``rank`` or of all."""
        stats = QueryStats()
        for record in self.records():
            if (run is not None and record.get("run") != run) or (
                rank is not None and record.get("rank", 0) != rank
            ):
                continue
            if record["kind"] == "hit":
                stats.cache_hits += 1
                continue
            stats.calls += 1
            stage = str(record.get("stage", "train"))
            stats.by_stage[stage] = stats.by_stage.get(stage, 0) + 1
            stats.prompt_tokens += int(record.get("prompt_tokens", 0))
            stats.completion_tokens += int(record.get("completion_tokens", 0))
            stats.cost_usd += float(record.get("cost_usd", 0.0))
        return stats

    def runs(self) -> list[str]:
        """The runs on record, in the order they first appear."""
        return list(dict.fromkeys(str(r.get("run")) for r in self.records()))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class CachedMLLM(BlackBoxMLLM):
    """Any backend behind a :class:`ResponseCache`.

    Only misses reach ``backend`` (and count as its calls); hits and repeats of a request within
    one batch count as ``cache_hits``. ``stats`` and ``stage`` are the backend's own, so code that
    reads, resets or restores them (callbacks, checkpoints) sees one set of numbers. Every
    answered query and every hit is recorded in the :class:`QueryLedger`
    ``<directory>/ledger.jsonl`` as it happens (:attr:`ledger`).

    Args:
        backend: the black box to answer misses.
        directory: the cache's folder; share it between runs of the same model to reuse answers.
        fsync: see :class:`ResponseCache` and :class:`QueryLedger`.
    """

    def __init__(self, backend: BlackBoxMLLM, directory: str = ".cache/mllm", fsync: bool = True):
        # no super().__init__(): stats and stage live on the backend
        self.backend = backend
        self.cache = ResponseCache(directory, fsync)
        self.ledger = QueryLedger(Path(directory) / LEDGER_NAME, fsync=fsync)

    @property
    def stats(self) -> QueryStats:  # type: ignore[override]
        return self.backend.stats

    @stats.setter
    def stats(self, value: QueryStats) -> None:
        self.backend.stats = value

    @property
    def stage(self) -> str:  # type: ignore[override]
        return self.backend.stage

    @stage.setter
    def stage(self, value: str) -> None:
        self.backend.stage = value

    @property
    def innermost(self) -> BlackBoxMLLM:
        return self.backend.innermost

    def prepare(self) -> None:
        self.backend.prepare()

    def close(self) -> None:
        self.backend.close()
        self.ledger.close()

    def cache_identity(self) -> dict[str, object]:
        return self.backend.cache_identity()

    def answer(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Answer]:
        if not requests:
            return []
        identity = self.backend.cache_identity()
        keys = [self.cache.key(identity, r) for r in requests]
        answers: list[Answer | None] = [None] * len(requests)
        first: dict[str, int] = {}  # key → index of its first request that must be sent
        for i, key in enumerate(keys):
            if key in first:
                continue
            answers[i] = self.cache.get(key)
            if answers[i] is None:
                first[key] = i
                continue
            self.ledger.hit(key, self.stage)
            if on_answer is not None:
                on_answer(i, answers[i])
        misses = list(first.values())

        def store(j: int, answer: Answer) -> None:
            # as each answer arrives, before anyone uses it: a crash later in the batch (or
            # the step) does not make a paid answer be paid again
            i = misses[j]
            self.ledger.paid(keys[i], answer, self.stage)
            self.cache.put(keys[i], answer, {"prompt": requests[i].prompt, "identity": identity})
            answers[i] = answer
            if on_answer is not None:
                on_answer(i, answer)

        failures: dict[int, str] = {}
        try:
            self.backend.answer([requests[i] for i in misses], on_answer=store)
        except BatchError as error:
            failures = {misses[j]: why for j, why in error.failures.items()}
        for i, key in enumerate(keys):  # repeats within the batch share their first's answer
            if answers[i] is None and key in first and first[key] != i:
                answers[i] = answers[first[key]]
                if answers[i] is None:
                    failures[i] = f"same request as {first[key]}, which failed"
                    continue
                self.ledger.hit(key, self.stage)
                if on_answer is not None:
                    on_answer(i, answers[i])
        sent = set(misses)
        self.stats.cache_hits += sum(a is not None for i, a in enumerate(answers) if i not in sent)
        if failures:
            raise BatchError(failures, answers)
        return [a for a in answers if a is not None]

    def _answer(self, requests: list[Request]) -> list[Answer]:
        return self.backend.answer(requests)  # unused: answer() above does the counting
