"""No answer stops a run: odd text is sanitised before it is scored or cached, a malformed reply is
retried and then scored as a blind guess, and every awkward answer is counted per step."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from privacy_lit.mllm.base import (
    FAILED,
    MAX_ANSWER_CHARS,
    Answer,
    BatchError,
    BlackBoxMLLM,
    Request,
    sanitize_text,
)
from privacy_lit.mllm.cache import CachedMLLM
from privacy_lit.mllm.loopback import ODD_ANSWERS, LoopbackServer
from privacy_lit.mllm.openai_backend import OpenAIChatMLLM
from privacy_lit.system import PrivacySystem
from privacy_lit.utility.retrieval import parse_answer
from tests.conftest import TinyBenchmark

FAST = {"backoff_initial_s": 0.001, "backoff_max_s": 0.01, "timeout_s": 5.0, "max_retries": 3}


def _requests(n: int) -> list[Request]:
    generator = torch.Generator().manual_seed(0)
    return [
        Request(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8, generator=generator), f"q{i}")
        for i in range(n)
    ]


def _clean(text: str) -> bool:
    """Whether every tokenizer, JSON writer and terminal takes ``text`` as it is."""
    text.encode("utf-8")  # strict: a lone surrogate raises
    return all(ch in "\n\t" or ord(ch) >= 32 and not 0x7F <= ord(ch) < 0xA0 for ch in text)


# ----------------------------------------------------------------------------- sanitising
def test_sanitize_text_repairs_what_tokenizers_reject() -> None:
    assert sanitize_text(b"caf\xc3\xa9 \xff\xfe ok") == ("café \ufffd\ufffd ok", False)
    assert sanitize_text("\ud800 running") == ("\ufffd running", False)
    assert sanitize_text("\ud83d\ude00") == ("\U0001f600", False)  # an escaped pair joins
    assert sanitize_text("a\x00b\x07c\x1b[0m\td\ne\x85") == ("a b c [0m\td\ne ", False)
    assert sanitize_text("x" * 10, max_chars=4) == ("xxxx", True)
    assert sanitize_text("plain text") == ("plain text", False)


@pytest.mark.parametrize("action", ODD_ANSWERS)
def test_each_odd_answer_is_answered_counted_and_cached_sanitised(
    action: str, tmp_path: Path
) -> None:
    with LoopbackServer(rule=lambda text: action if text == "q1" else None) as server:
        backend = OpenAIChatMLLM("loopback", server.base_url, concurrency=4, **FAST)
        cached = CachedMLLM(backend, str(tmp_path))
        requests = _requests(3)
        try:
            answers = cached.answer(requests)
            assert cached.stats.calls == server.answered == 3 and cached.stats.failed == 0
            odd = answers[1]
            assert _clean(odd.text) and len(odd.text) <= MAX_ANSWER_CHARS
            # what the cache holds is the sanitised text: a rerun is served the same
            key = cached.cache.key(backend.cache_identity(), requests[1])
            entry = json.loads(cached.cache.path(key).read_text())
            assert entry["text"] == odd.text
            again = cached.answer(requests)
            assert again == answers and server.received == 3 and cached.stats.cache_hits == 3
        finally:
            backend.close()
    parsed = parse_answer(odd.text)
    expected = {
        "empty": parsed.empty,
        "refusal": parsed.refusal,
        "overlong": odd.overlong,
        "bad-utf8": "\ufffd" in odd.text and "echo: q1" in odd.text,
        "surrogate": odd.text.startswith("\ufffd echo: q1"),
        "control": odd.text.startswith("  echo: q1"),
    }
    assert expected[action]


def test_a_malformed_reply_is_retried_like_a_transport_error(tmp_path: Path) -> None:
    arrivals: list[str] = []

    def garbage_twice(text: str) -> str | None:
        arrivals.append(text)
        return "garbage" if text == "q1" and arrivals.count("q1") <= 2 else None

    with LoopbackServer(rule=garbage_twice) as server:
        backend = OpenAIChatMLLM("loopback", server.base_url, concurrency=4, **FAST)
        try:
            answers = backend.answer(_requests(3))
        finally:
            backend.close()
    assert answers[1].text.startswith("echo: q1")
    assert backend.retries == 2 and server.faults["garbage"] == 2
    assert backend.stats.calls == server.answered == 3 and backend.stats.failed == 0


def test_a_reply_malformed_every_time_is_a_failed_query_and_a_blind_guess(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    with LoopbackServer(rule=lambda text: "garbage" if text == "q1" else None) as server:
        backend = OpenAIChatMLLM("loopback", server.base_url, concurrency=4, **FAST)
        system = PrivacySystem(CachedMLLM(backend, str(tmp_path)), reviewer_arch="resnet18",
                               **tiny.system_args)  # fmt: skip
        requests = _requests(3)
        try:
            with pytest.raises(BatchError, match="request 1: gave up after 4 attempts, last: "
                               "the server's reply is not a chat completion"):  # fmt: skip
                system.mllm.answer(requests)
            assert server.faults["garbage"] == 4  # max_retries + 1 attempts
            # the answered two were cached; the failed one is a blind guess for the step
            answers = system._ask([r.visual for r in requests], [r.prompt for r in requests])
        finally:
            backend.close()
    assert answers[1] is FAILED and not answers[0].failed and not answers[2].failed
    assert server.answered == 2 == backend.stats.calls  # nothing answered twice, none lost
    assert backend.stats.failed == 2 and system.answer_counts["failed"] == 1
    assert parse_answer(FAILED.text).empty  # scored with equal scores for every class


def test_a_batch_that_mostly_failed_stops_the_step(tiny: TinyBenchmark) -> None:
    system = PrivacySystem(OddMLLM(fail_every=2), reviewer_arch="resnet18",
                           max_failed_fraction=0.25, **tiny.system_args)  # fmt: skip
    visuals = [r.visual for r in _requests(4)]
    with pytest.raises(BatchError, match="2 of 4 requests failed"):
        system._ask(visuals, ["q"] * 4)
    system.hparams.max_failed_fraction = 0.5
    assert [a.failed for a in system._ask(visuals, ["q"] * 4)] == [False, True, False, True]


# ----------------------------------------------------------------------------- in training
class OddMLLM(BlackBoxMLLM):
    """Every fourth request of a batch: an empty answer, a refusal with control characters, a
    runaway answer opening with a lone surrogate (which crashed the text encoder's tokenizer
    before answers were sanitised), a failure (with ``fail_every``: every ``fail_every``-th
    request fails, the others answer)."""

    def __init__(self, fail_every: int | None = None):
        super().__init__()
        self.fail_every = fail_every

    def _answer(self, requests: list[Request]) -> list[Answer]:
        texts = ["", "I'm sorry,\x00 I can't help.\x1b", "\ud800running " * MAX_ANSWER_CHARS, None]
        if self.fail_every is None:
            answers = [texts[i % 4] for i in range(len(requests))]
        else:
            answers = [None if i % self.fail_every else "ok" for i in range(len(requests))]
        answers = [None if t is None else Answer(t) for t in answers]
        failures = {i: "boom" for i, a in enumerate(answers) if a is None}
        if failures:
            raise BatchError(failures, answers)
        return answers


def test_awkward_answers_are_counted_per_step_in_every_logger(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    L.seed_everything(0)
    mllm = OddMLLM()
    system = PrivacySystem(mllm, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                           **tiny.system_args)  # fmt: skip
    trainer = L.Trainer(max_steps=2, logger=CSVLogger(tmp_path), log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        accelerator="cpu")  # fmt: skip
    trainer.fit(system, datamodule=tiny.data())
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    steps = [r for r in rows if r.get("mllm/failed")]
    assert len(steps) == 2
    # 8 queries a step (θ ± cΔ for 4 clips): two of each kind, the failed ones blind guesses
    for row in steps:
        assert {k: float(row[f"mllm/{k}"]) for k in ("empty", "refusals", "overlong", "failed")} \
            == {"empty": 2.0, "refusals": 2.0, "overlong": 2.0, "failed": 2.0}  # fmt: skip
        assert math.isfinite(float(row["train/utility_loss"]))
        # what the black box saw: the anonymizer starts as the identity, so the images sent
        # are the raw training frames but for rounding
        assert float(row["blackbox/psnr_median"]) > 40
        assert float(row["blackbox/ssim_median"]) > 0.99
    assert mllm.stats.failed == 4 and mllm.stats.calls == 12
