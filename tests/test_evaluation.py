"""The evaluation protocol: the new metrics give the old figures, rows carry Tab. B11's precision,
results files stay readable, and ``test`` evaluates a checkpoint against every comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MultilabelAveragePrecision

from privacy_lit.analysis.pareto import read_metrics
from privacy_lit.cli import main
from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.data.vispr import VISPR7
from privacy_lit.evaluation import (
    Row,
    evaluate,
    format_table,
    fresh_reviewer_scores,
    read_results,
    stack_dataset,
    utility_top1,
    write_results,
)
from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request
from privacy_lit.models.anonymizer import to_float
from privacy_lit.models.reviewer import build_reviewer
from privacy_lit.utility.retrieval import RetrievalScorer
from tests.conftest import FixedAnswerMLLM, TinyBenchmark


@pytest.fixture(scope="module")
def data(tiny: TinyBenchmark) -> SyntheticDataModule:
    return tiny.data()


def _old_fresh_reviewer_cmap(train_images, train_labels, test_images, test_labels, seed, batch):
    """The protocol's privacy figure before the metrics package (torchmetrics' macro AP)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reviewer = build_reviewer("resnet18", train_labels.shape[1])
    optimizer = torch.optim.Adam(reviewer.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=batch, shuffle=True,
                        drop_last=True, generator=generator)  # fmt: skip
    reviewer.train()
    for images, labels in loader:
        loss = F.binary_cross_entropy_with_logits(reviewer(to_float(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reviewer.eval()
    metric = MultilabelAveragePrecision(test_labels.shape[1], average="macro")
    with torch.no_grad():
        metric.update(torch.sigmoid(reviewer(to_float(test_images))), test_labels.long())
    return float(metric.compute())


def test_raw_privacy_figure_is_unchanged_and_has_per_attribute_precision(data) -> None:
    train_images, train_labels = stack_dataset(data.privacy_dataset("train"), "image", "attributes")
    test_images, test_labels = stack_dataset(data.privacy_dataset("test"), "image", "attributes")
    assert (test_labels.sum(0) > 0).all()  # every attribute has a positive: the policies agree
    old = _old_fresh_reviewer_cmap(train_images, train_labels, test_images, test_labels, 0, 24)
    new = fresh_reviewer_scores(
        train_images, train_labels, test_images, test_labels, "resnet18", 1, 0, batch=24,
        names=list(VISPR7),
    )  # fmt: skip
    assert new.cmap == pytest.approx(old, abs=1e-6)
    assert list(new.attribute_precision) == list(VISPR7)
    assert all(0.0 <= v <= 1.0 for v in new.attribute_precision.values())


def test_utility_top1_counts_refusals_wrong_and_restores_the_stage(data) -> None:
    clips, actions = stack_dataset(data.utility_dataset("test"), "clip", "action")
    scorer = RetrievalScorer(data.class_names)
    first = FixedAnswerMLLM(f"The person is {data.class_names[0]}.")
    batches = list(zip(clips.split(5), actions.split(5), strict=True))
    top1 = utility_top1(nn.Identity(), batches, first, scorer, "What?")
    assert top1 == pytest.approx(float((actions == 0).float().mean()))
    refusing = FixedAnswerMLLM("I'm sorry, I can't help with that.")
    assert utility_top1(nn.Identity(), batches, refusing, scorer, "What?") == 0.0
    assert refusing.stage == "train" and refusing.stats.by_stage == {"test": len(clips)}


class _PromptEcho(BlackBoxMLLM):
    """Answers "tennis" when the question mentions a sport, and remembers the prompts."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def _answer(self, requests: list[Request]) -> list[Answer]:
        self.prompts += [r.prompt for r in requests]
        return [Answer("Tennis." if "sport" in r.prompt else "a dog") for r in requests]


class _TinyVQA:
    """The parts of a VQA data module the protocol reads."""

    utility_task = "vqa"
    attribute_names = ["a4_gender", "a17_color"]

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.vqa = [
            {"image": torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g),
             "question": q, "answers": answers}
            for q, answers in [("Which sport is this?", ["tennis"] * 10),
                               ("Which sport is played?", ["tennis"] * 2 + ["golf"] * 8),
                               ("What animal is it?", ["cat"] * 10)]
        ]  # fmt: skip
        self.images = [
            {"image": torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g),
             "attributes": torch.tensor([float(i % 2), float(i % 3 == 0)])}
            for i in range(8)
        ]  # fmt: skip

    def utility_dataset(self, stage: str) -> list[dict]:
        return self.vqa

    def privacy_dataset(self, stage: str) -> list[dict]:
        return self.images


def test_vqa_data_get_vqa_accuracy() -> None:
    mllm = _PromptEcho()
    rows = evaluate({"raw": nn.Identity()}, _TinyVQA(), mllm, None,
                    "{question} Answer with a single word.", "resnet18", 0)  # fmt: skip
    # official rule: 10 matching humans → 1, 2 of 10 → 0.6, none → 0
    assert rows[0].top1 == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert rows[0].utility_metric == "vqa_accuracy"
    assert mllm.prompts[0] == "Which sport is this? Answer with a single word."
    assert "| method | VQA accuracy (%) ↑ |" in format_table(rows)


def test_results_files_stay_backward_compatible(tmp_path: Path) -> None:
    old = tmp_path / "old.json"  # a results.json written before per-attribute precision existed
    old_row = {"method": "raw", "top1": 1.0, "cmap": 0.81, "mllm_calls_per_sample": 0.0}
    old.write_text(json.dumps({"rows": [old_row], "zo_steps": 100}))
    rows, extra = read_results(old)
    assert rows == [Row("raw", 1.0, 0.81)] and extra == {"zo_steps": 100}
    new = tmp_path / "new.json"
    row = Row("ours", 0.9, 0.7, 12.5, {"a4_gender": 0.6})
    write_results([row], new, {"stage": "test"})
    payload = json.loads(new.read_text())
    assert {"method", "top1", "cmap", "mllm_calls_per_sample"} <= set(payload["rows"][0])
    assert read_results(new) == ([row], {"stage": "test"})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="rows"):
        read_results(tmp_path / "bad.json")


def _results(out: Path) -> dict:
    files = list(out.rglob("results.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.mark.slow
def test_test_subcommand_evaluates_a_checkpoint_and_every_comparison(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    # untrained fresh reviewers (epochs 0) keep this fast; the protocol's training is tested above
    report = "--trainer.callbacks.init_args."
    fit_args = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--model.recon_epochs=1", "--model.reviewer_epochs=0",
                f"{report}reviewer_epochs=0", f"{report}baselines=[raw]"]  # fmt: skip
    main(["fit", *tiny.cli_args(tmp_path / "fit"), *fit_args])
    fitted = _results(tmp_path / "fit")["rows"]
    assert [r["method"] for r in fitted] == ["raw", "ours"]
    (metrics_csv,) = (tmp_path / "fit").rglob("metrics.csv")
    logged = [r for r in read_metrics(metrics_csv) if "results/ours/cmap" in r]
    assert len(logged) == 1  # the table went to the loggers too (W&B summary, CSV)
    assert logged[0]["results/ours/cmap"] == pytest.approx(fitted[1]["cmap"])
    assert logged[0]["results/raw/top1"] == pytest.approx(fitted[0]["top1"])
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")

    every = [f"{report}reviewer_epochs=0", f"{report}baselines=[all]",
             f"{report}adversarial.steps=1", f"{report}adversarial.reviewer_warmup_steps=0",
             f"{report}surrogate.epochs=1"]  # fmt: skip
    main(["test", *tiny.cli_args(tmp_path / "test"), f"--ckpt_path={ckpt}", *every])
    payload = _results(tmp_path / "test")
    assert [r["method"] for r in payload["rows"]] == [
        "raw", "downsample 2x", "downsample 4x", "downsample 8x", "blacken", "blur_strong",
        "blur_weak", "surrogate", "whitebox", "ours",
    ]  # fmt: skip
    assert payload["stage"] == "test" and payload["checkpoint"] == str(ckpt) and payload["complete"]
    for row in payload["rows"]:
        assert 0.0 <= row["top1"] <= 1.0 and 0.0 <= row["cmap"] <= 1.0
        assert list(row["attribute_precision"]) == list(VISPR7)
        assert row["mllm_calls_per_sample"] == 0.0  # the fit made no zeroth-order step

    # no checkpoint: nothing trained to call "ours", so only the comparisons are evaluated
    bare = [f"{report}reviewer_epochs=0", f"{report}baselines=[raw]"]
    main(["test", *tiny.cli_args(tmp_path / "bare"), *bare])
    payload = _results(tmp_path / "bare")
    assert [r["method"] for r in payload["rows"]] == ["raw"] and payload["checkpoint"] is None


def test_unknown_baseline_is_refused() -> None:
    from privacy_lit.callbacks import PrivacyUtilityReport

    with pytest.raises(ValueError, match="valid: all, raw"):
        PrivacyUtilityReport(baselines=["raw", "pixelate"])
    report = PrivacyUtilityReport(baselines=["all", "raw"])
    assert report.comparisons[0] == "raw" and report.comparisons[-1] == "whitebox"
    assert PrivacyUtilityReport(downsample_factors=[2, 8]).comparisons == [
        "raw", "downsample2", "downsample8",
    ]  # fmt: skip


def test_a_comparison_the_run_cannot_have_is_refused_before_training() -> None:
    from types import SimpleNamespace

    from privacy_lit.callbacks import PrivacyUtilityReport

    action_data = SimpleNamespace(utility_task="action", class_names=["a", "b"])
    remote = SimpleNamespace(mllm=SimpleNamespace(innermost=object()))  # a cached remote API
    report = PrivacyUtilityReport(baselines=["raw", "whitebox"])
    with pytest.raises(ValueError, match="'whitebox' needs the black box's own"):
        report.setup(SimpleNamespace(datamodule=action_data), remote, "fit")
    vqa_data = SimpleNamespace(utility_task="vqa", class_names=[])
    with pytest.raises(ValueError, match="'surrogate' trains against an action recognizer"):
        PrivacyUtilityReport(baselines=["surrogate"]).setup(
            SimpleNamespace(datamodule=vqa_data), remote, "fit"
        )
    PrivacyUtilityReport(baselines=["raw", "blur_strong"]).setup(
        SimpleNamespace(datamodule=vqa_data), remote, "fit"
    )  # heuristic rows need nothing
    every = PrivacyUtilityReport(baselines=["all"])  # all that apply: the others are left out
    with pytest.warns(UserWarning, match="'all' leaves out 'whitebox'"):
        every.setup(SimpleNamespace(datamodule=action_data), remote, "fit")
    assert "surrogate" in every.comparisons and "whitebox" not in every.comparisons

    # the white-box rows need the stand-in's recognizer to predict the data's labels, in order
    class StandIn:
        recognizer = None
        classes = ["x", "y"]
        phrases = {"x": "b", "y": "a"}  # class id → name: predicts ["b", "a"]

    standin = SimpleNamespace(mllm=SimpleNamespace(innermost=StandIn()))
    with pytest.raises(ValueError, match=r"predicts \['b', 'a'\].*order matters"):
        report.setup(SimpleNamespace(datamodule=action_data), standin, "fit")
    StandIn.phrases = {"x": "a", "y": "b"}
    report.setup(SimpleNamespace(datamodule=action_data), standin, "fit")
