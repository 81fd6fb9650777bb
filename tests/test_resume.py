"""Nothing lost, nothing paid twice: a run killed (SIGKILL) in its adversarial phase and resumed
from its last checkpoint sends the black box what the uninterrupted run sent, pays only for what
the killed run had not, and ends at the same θ; SIGTERM and Ctrl-C stop it with a checkpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from privacy_lit.cli import main
from privacy_lit.data.resumable import ResumableLoader
from privacy_lit.mllm.cache import LEDGER_NAME, QueryLedger
from privacy_lit.mllm.loopback import LoopbackServer
from privacy_lit.system import PrivacySystem
from tests.conftest import DEMO_CONFIG, TINY_CONFIG, PricedFakeMLLM, TinyBenchmark, csv_logger

ROOT = Path(__file__).resolve().parents[1]


def _batches(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_the_loader_keeps_torchs_order_and_resumes_mid_pass() -> None:
    data = TensorDataset(torch.arange(10))
    torch.manual_seed(0)
    plain = [b for _ in range(2) for b in _batches(DataLoader(data, 3, shuffle=True,
                                                              drop_last=True))]  # fmt: skip
    torch.manual_seed(0)
    loader = ResumableLoader(data, 3, drop_last=True)
    passing = iter(loader)
    ours = [next(passing)[0].tolist(), next(passing)[0].tolist()]
    state, generator = loader.state_dict(), torch.get_rng_state()  # what a checkpoint holds
    ours += [b[0].tolist() for b in passing] + _batches(loader)
    assert ours == plain  # the same batches as torch's shuffling loader, pass after pass
    assert state["batches"] == 2

    resumed = ResumableLoader(data, 3, drop_last=True)
    resumed.load_state_dict(state)
    torch.set_rng_state(generator)
    # the rest of the pass, then the next pass drawn as the uninterrupted loader drew it
    assert _batches(resumed) + _batches(resumed) == plain[2:]


# ----------------------------------------------------------------------------- signals
class SignalAt(L.Callback):
    """Sends ``signum`` to this process after training step ``step`` (as a scheduler would)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _fit(tiny: TinyBenchmark, out: Path, callbacks=(), ckpt_path: Path | None = None):
    L.seed_everything(0)
    # checkpoints on the signal only (the periodic ones are the kill test's)
    system = PrivacySystem(PricedFakeMLLM(), reviewer_arch="resnet18", recon_epochs=0,
                           reviewer_epochs=0, c=0.05, checkpoint_every_n_steps=100,
                           **tiny.system_args)  # fmt: skip
    trainer = L.Trainer(max_epochs=2, logger=CSVLogger(out), enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
                        deterministic=True, callbacks=list(callbacks))  # fmt: skip
    trainer.fit(system, datamodule=tiny.data(), ckpt_path=ckpt_path)
    return system


def _theta(system: PrivacySystem) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in system.anonymizer.head.parameters()])


@pytest.fixture(scope="module")
def whole(tiny: TinyBenchmark, tmp_path_factory: pytest.TempPathFactory) -> PrivacySystem:
    """The uninterrupted run the signal tests compare with."""
    return _fit(tiny, tmp_path_factory.mktemp("whole"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(
    tiny: TinyBenchmark, tmp_path: Path, signum: int, whole: PrivacySystem
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _fit(tiny, tmp_path / "stopped", [SignalAt(5, signum)])
    assert stopped.value.code == 128 + signum
    (checkpoint,) = (tmp_path / "stopped").rglob("resume.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 5 and state["zo"]["step"] == 5 and "rng" in state["zo"]
    # both training loaders' places in their passes: Lightning's own loader states
    assert len(state["loops"]["fit_loop"]["state_dict"]["combined_loader"]) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler given back

    resumed = _fit(tiny, tmp_path / "stopped", ckpt_path=checkpoint)
    assert resumed.zo_step == whole.zo_step == 12
    assert torch.equal(_theta(resumed), _theta(whole))
    assert resumed.mllm.stats.calls == whole.mllm.stats.calls == 12 * 8
    # a run that finishes removes its own (the stopped run's stays in its version_0)
    assert [p.parent.parent.name for p in tmp_path.rglob("resume.ckpt")] == ["version_0"]


# ----------------------------------------------------------------------------- kill -9
def _fit_args(tiny: TinyBenchmark, out: Path, cache: Path, url: str) -> list[str]:
    backend = {
        "class_path": "privacy_lit.mllm.openai_backend.OpenAIChatMLLM",
        "init_args": {"model": "loopback", "base_url": url, "concurrency": 4, "max_retries": 2,
                      "timeout_s": 120, "prices": {"loopback": {"prompt": 2.5,
                                                                "completion": 10.0}}},
    }  # fmt: skip
    mllm = {"class_path": "privacy_lit.mllm.cache.CachedMLLM",
            "init_args": {"directory": str(cache), "backend": backend}}  # fmt: skip
    return [
        "fit", "--config", DEMO_CONFIG, "--config", TINY_CONFIG,
        f"--data.init_args.root={tiny.root}", f"--trainer.default_root_dir={out}",
        f"--trainer.logger={json.dumps([csv_logger(out)])}", "--trainer.callbacks=[]",
        f"--model.mllm={json.dumps(mllm)}", "--model.recon_epochs=0",
        "--model.reviewer_epochs=0", "--trainer.max_epochs=2",
        "--model.checkpoint_every_n_steps=4", "--trainer.log_every_n_steps=1",
    ]  # fmt: skip


def _paid(cache: Path) -> list[dict]:
    return [r for r in QueryLedger(cache / LEDGER_NAME).records() if r["kind"] == "paid"]


def _final(out: Path) -> dict:
    (checkpoint,) = out.rglob("epoch=1-step=12.ckpt")
    return torch.load(checkpoint, weights_only=True)


def _calls_after_each_step(out: Path) -> list[int]:
    """Queries paid after each step of a run (the system logs its running total)."""
    (metrics,) = out.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("mllm/calls")]
    return [int(float(r["mllm/calls"])) for r in sorted(rows, key=lambda r: int(r["step"]))]


@pytest.mark.slow
def test_a_killed_run_resumes_sending_the_same_requests_and_paying_nothing_twice(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    hang = {"after": None}

    def rule(text: str) -> str | None:  # from the kill on, requests stay in flight unanswered
        return "hang" if hang["after"] is not None and server.answered >= hang["after"] else None

    with LoopbackServer(rule=rule, hang_s=300) as server:
        # the uninterrupted run (repeated requests, e.g. θ ± cΔ that round to the same pixels,
        # are asked once: the cache serves the others)
        main(_fit_args(tiny, tmp_path / "whole", tmp_path / "cache_whole", server.base_url))
        whole = [d for d, _ in server.outcomes]
        calls = _calls_after_each_step(tmp_path / "whole")
        # (two pixel tensors may encode to one JPEG: a body can be sent twice, as two queries)
        assert len(calls) == 12 and calls[-1] == len(whole)

        # the same run, killed with SIGKILL in the middle of step 6 (last checkpoint: step 4,
        # in the middle of the first epoch: the resumed run also crosses into the second)
        kill_after = calls[4] + max(1, (calls[5] - calls[4]) // 2)
        hang["after"] = server.answered + kill_after
        args = _fit_args(tiny, tmp_path / "run", tmp_path / "cache", server.base_url)
        child = subprocess.Popen([sys.executable, "-m", "privacy_lit", *args], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

        def settled() -> bool:  # every request let through is answered and on record, and
            # the run waits for requests in flight: the kill comes in the middle of a batch
            answered = sum(a == "ok" for _, a in server.outcomes[len(whole) :])
            return (
                answered >= kill_after
                and server.in_flight > 0
                and (server.answered - len(whole) == answered == len(_paid(tmp_path / "cache")))
            )

        try:
            deadline = time.monotonic() + 900
            while not settled():
                assert child.poll() is None and time.monotonic() < deadline, "no kill point"
                time.sleep(0.05)
            in_flight = server.in_flight  # sent, not answered: what a kill may cost twice
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        killed = server.outcomes[len(whole) :]
        answered_before = [d for d, a in killed if a == "ok"]
        hang["after"] = None

        # resumed from its last checkpoint
        (checkpoint,) = (tmp_path / "run").rglob("resume.ckpt")
        saved = torch.load(checkpoint, weights_only=True)
        assert saved["global_step"] == 4
        main([*_fit_args(tiny, tmp_path / "run", tmp_path / "cache", server.base_url),
              f"--ckpt_path={checkpoint}"])  # fmt: skip
        resumed = server.outcomes[len(whole) + len(killed) :]

    # up to the checkpoint the killed run asked what the uninterrupted one asked; after it, the
    # resumed run asks exactly what the uninterrupted one asked, less what the killed run was
    # answered (the cache serves those)
    at_checkpoint = saved["zo"]["mllm_stats"]["calls"]
    assert at_checkpoint == calls[3]
    assert Counter(answered_before[:at_checkpoint]) == Counter(whole[:at_checkpoint])
    assert Counter(d for d, _ in resumed) == Counter(whole[at_checkpoint:]) - Counter(
        answered_before[at_checkpoint:])  # fmt: skip
    assert {a for _, a in resumed} == {"ok"}
    paid_twice = len(answered_before) + len(resumed) - len(whole)
    assert 0 <= paid_twice <= in_flight
    # the ledger holds every query paid, killed run and resumed run as one run
    ledger = _paid(tmp_path / "cache")
    assert len(ledger) == len(answered_before) + len(resumed)
    assert len({r["run"] for r in ledger}) == 1
    final, reference = _final(tmp_path / "run"), _final(tmp_path / "whole")
    assert final["zo"]["mllm_stats"]["calls"] == len(ledger)
    # and θ (and the reviewer) end where the uninterrupted run's did
    for name, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
    report = {"paid_whole_run": len(whole), "paid_before_kill": len(answered_before),
              "in_flight_at_kill": in_flight, "paid_after_resume": len(resumed),
              "paid_twice": paid_twice, "ledger": len(ledger),
              "server_answered": len(answered_before) + len(resumed)}  # fmt: skip
    print("kill/resume figures:", json.dumps(report))
