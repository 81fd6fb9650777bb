"""Shared fixtures and fakes of the test suite.

- ``tiny``: the tiny synthetic benchmark of ``tests/conf/tiny.yaml`` (generated once per session)
  with what tests build on it: its data module, its stand-in black box, the system arguments and
  the CLI arguments of a demo run on it (``--config conf/demo.yaml --config tests/conf/tiny.yaml``
  plus the paths of this run);
- ``layouts_root``: every real benchmark's on-disk layout in miniature (``tests/fixtures.py``);
- ``real_root``: the real releases' annotation files with stand-in media (``tests/real_root.py``);
- fake black boxes (:class:`FixedAnswerMLLM`, :class:`PricedFakeMLLM`) and a byte-level tokenizer
  for tiny Hugging Face models.

Tests run with one intra-op thread per process unless ``OMP_NUM_THREADS`` says otherwise: their
tensors are too small to gain from a second thread, and on a shared 2-core machine threads that
wait for each other's share of a core make a step several times slower.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402 (after OMP_NUM_THREADS: torch reads it when it starts)

from privacy_lit.data.synthetic import (  # noqa: E402
    ACTION_PHRASES,
    SyntheticConfig,
    SyntheticDataModule,
    generate,
)
from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request  # noqa: E402
from privacy_lit.mllm.standin import EmbeddedActionMLLM  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

DEMO_CONFIG = "conf/demo.yaml"
TINY_CONFIG = "tests/conf/tiny.yaml"
_TINY = yaml.safe_load((Path(__file__).parent / "conf" / "tiny.yaml").read_text())
TINY_VIDEOS: dict[str, int] = _TINY["data"]["init_args"]["videos_per_action"]
TINY_IMAGES: dict[str, int] = _TINY["data"]["init_args"]["images"]


def csv_logger(out: Path) -> dict[str, Any]:
    """A CSV logger writing under ``out``, as a LightningCLI ``trainer.logger`` entry."""
    return {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(out)},
    }


@dataclass(frozen=True)
class TinyBenchmark:
    """The tiny synthetic benchmark at ``root`` and the settings of ``tests/conf/tiny.yaml``."""

    root: Path

    @property
    def standin_checkpoint(self) -> Path:
        return self.root / "standin.pt"

    @property
    def system_args(self) -> dict[str, Any]:
        """The overlay's anonymizer size, for tests that build a :class:`PrivacySystem`."""
        return {k: tuple(_TINY["model"][k]) for k in ("anonymizer_widths", "head_hidden")}

    def data(self, **overrides: Any) -> SyntheticDataModule:
        """A fresh data module over the benchmark, with the overlay's sizes and batch sizes."""
        return SyntheticDataModule(str(self.root), **(_TINY["data"]["init_args"] | overrides))

    def standin(self, **overrides: Any) -> EmbeddedActionMLLM:
        """The demo's stand-in black box, its recognizer trained on first use and kept."""
        settings = _TINY["model"]["mllm"]["init_args"] | overrides
        return EmbeddedActionMLLM(str(self.root), str(self.standin_checkpoint), **settings)

    def settings(self) -> list[str]:
        """``key=value`` settings of a run of the overlay that its YAML cannot hold: the paths of
        this benchmark, and the demo's report (the last callback; an overlay's list would
        replace the demo's callbacks, not edit one) with its fresh reviewers in this process
        and no row cache under ``data/``, so no run reads another's rows."""
        return [
            f"data.init_args.root={self.root}",
            f"model.mllm.init_args.data_root={self.root}",
            f"model.mllm.init_args.checkpoint={self.standin_checkpoint}",
            "trainer.callbacks.init_args.reviewer_processes=0",
            "trainer.callbacks.init_args.row_cache=null",
        ]

    def cli_args(self, out: Path, loggers: list[dict[str, Any]] | None = None) -> list[str]:
        """The demo on this benchmark, writing under ``out`` (CSV logging unless ``loggers``);
        the subcommand goes before, further overrides after."""
        return [
            "--config", DEMO_CONFIG, "--config", TINY_CONFIG, *(f"--{s}" for s in self.settings()),
            f"--trainer.default_root_dir={out}",
            f"--trainer.logger={json.dumps(loggers or [csv_logger(out)])}",
        ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic benchmark, generated once per session at the overlay's sizes."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticConfig(seed=0, videos_per_action=TINY_VIDEOS, images=TINY_IMAGES))
    return root


@pytest.fixture(scope="session")
def tiny(tiny_root: Path) -> TinyBenchmark:
    return TinyBenchmark(tiny_root)


@pytest.fixture(scope="session")
def layouts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dataset in its real layout, under the folder names of ``conf/*.yaml``."""
    from tests import fixtures

    return fixtures.build_all(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real-annotation root per test session (skips without the real files)."""
    from tests.real_root import build_real_root, require_real

    return build_real_root(tmp_path_factory.mktemp("real_root"), require_real())


@pytest.fixture(scope="session")
def byte_tokenizer():
    """A byte-level BPE without merges, built offline: every text round-trips, one token per
    byte, with ``<image>`` / ``<video>`` special tokens for the LLaVA processors."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )  # fmt: skip


class FixedAnswerMLLM(BlackBoxMLLM):
    """Answers every request with ``text`` and remembers the prompts it was sent."""

    def __init__(self, text: str = "playing tennis") -> None:
        super().__init__()
        self.text = text
        self.prompts: list[str] = []

    def _answer(self, requests: list[Request]) -> list[Answer]:
        self.prompts += [r.prompt for r in requests]
        return [Answer(self.text) for _ in requests]


PROMPT_TOKENS, PRICE_PER_TOKEN = 12, 1e-5


class PricedFakeMLLM(BlackBoxMLLM):
    """A priced stand-in: an action phrase chosen from the pixels' CRC, fixed token counts.

    No recognizer to train, so a fit takes seconds; tokens, dollars and one cache hit per batch
    are counted so that every usage series has something to show."""

    def _answer(self, requests: list[Request]) -> list[Answer]:
        phrases = list(ACTION_PHRASES.values())
        answers = [
            Answer(f"The person is {phrases[zlib.crc32(r.visual.numpy().tobytes()) % 8]}.")
            for r in requests
        ]
        completion = sum(len(a.text.split()) for a in answers)
        self.stats.prompt_tokens += PROMPT_TOKENS * len(requests)
        self.stats.completion_tokens += completion
        self.stats.cost_usd += (PROMPT_TOKENS * len(requests) + completion) * PRICE_PER_TOKEN
        self.stats.cache_hits += 1
        return answers
