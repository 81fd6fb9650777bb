"""Every paper setting's config trains end to end on tiny fixtures in the real layouts.

One adversarial step and one validation batch per config (``fast_dev_run``), with a fixed-answer
black box: what is checked is that the data, the prompts (VQA: ``{question}`` filled in), the
utility loss of each task and the evaluation metrics fit together — not any figure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy_lit.cli import main

pytestmark = pytest.mark.slow  # a Lightning fit per configuration

FIXED = "--model.mllm=tests.conftest.FixedAnswerMLLM"


@pytest.mark.parametrize("name", ["hmdb", "ucf101", "okvqa", "novel"])
def test_a_paper_setting_trains_one_adversarial_step(layouts_root: Path, name: str) -> None:
    cli = main([
        "fit", "--config", f"conf/{name}.yaml", "--data.init_args.root", str(layouts_root),
        "--data.init_args.batch_size=2", "--data.init_args.privacy_batch_size=2",
        "--data.init_args.num_workers=0", FIXED,
        "--model.reviewer_arch=resnet18", "--model.recon_epochs=0", "--model.reviewer_epochs=0",
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
    ])  # fmt: skip
    system = cli.model
    assert system.zo_step == 1
    calls = system.mllm.stats.by_stage
    assert calls["train"] == 4  # θ ± c_kΔ_k for each of the 2 utility samples
    if name == "okvqa":
        assert system.utility_task == "vqa"
        # the template's {question} is each sample's question
        assert all("{question}" not in p and p.endswith("single word or phrase.") for p in
                   system.mllm.prompts)  # fmt: skip
        assert "val/vqa_accuracy" in cli.trainer.logged_metrics
    else:
        assert "val/top1" in cli.trainer.logged_metrics


@pytest.mark.parametrize("name", ["hmdb", "novel", "vp_hmdb"])
def test_one_adversarial_step_on_the_real_annotation_files(real_root: Path, name: str) -> None:
    """The headline settings build their training and test sets from the real releases'
    annotation files (tests/real_root.py: stand-in media) and take one adversarial step."""
    cli = main([
        "fit", "--config", f"conf/{name}.yaml", "--data.init_args.root", str(real_root),
        "--data.init_args.batch_size=2", "--data.init_args.privacy_batch_size=2",
        "--data.init_args.num_workers=0", FIXED,
        "--model.reviewer_arch=resnet18", "--model.recon_epochs=0", "--model.reviewer_epochs=0",
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
    ])  # fmt: skip
    assert cli.model.zo_step == 1
    data = cli.datamodule
    if name == "hmdb":
        assert len(data.utility_dataset("train")) == 3_570 - 286  # PA-HMDB51 videos left out
        assert len(data.privacy_dataset("test").videos) == 515
    if name == "vp_hmdb":
        assert len(data.privacy_dataset("train").videos) == 3_570  # every video has a label
    assert "val/top1" in cli.trainer.logged_metrics
