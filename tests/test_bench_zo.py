"""``bench zo`` on the tiny benchmark: every method runs on the same budget and is reported."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from privacy_lit.bench.zo import (
    BenchRow,
    HeadTask,
    format_table,
    fraction_of_spsa,
    mean_fraction_of_spsa,
    peak_step_bytes,
    per_seed_versus_spsa,
    queries_to_target,
    run,
)
from privacy_lit.proxy import RecognizerProxy
from tests.conftest import TINY_CONFIG, TinyBenchmark


@pytest.fixture(scope="module")
def task_factory(tiny: TinyBenchmark):
    data, mllm = tiny.data(), tiny.standin()
    mllm.prepare()  # trained (or loaded) here, whichever test builds the first task
    proxy = RecognizerProxy(epochs=1)
    proxy.prepare(data, torch.device("cpu"))
    return lambda seed: HeadTask(data, mllm, num_clips=2, seed=seed, proxy=proxy)


@pytest.mark.slow  # twelve methods, each through the stand-in
def test_bench_zo_runs_every_method_on_the_same_budget(task_factory) -> None:
    rows, meta = run(task_factory, seeds=1, budget=8)
    assert [r.method for r in rows] == [
        "white-box", "ours (critical history)", "SPSA", "SPSA-GC", "NES", "RL (REINFORCE)",
        "CMA-ES (separable)", "queried history", "subspace SPSA (d=256)",
        "subspace CMA-ES (d=256)", "prior-guided (proxy)", "prior-guided search (proxy)",
        "prior-guided (proxy + 1 random)",
    ]  # fmt: skip
    assert meta["parameters"] == 9067 and meta["budget"] == 8 and meta["clips"] == 2
    assert meta["seed_list"] == [0]
    for best, target, half, start in zip(
        meta["best_loss"], meta["target_loss"], meta["half_loss"], meta["start_loss"], strict=True
    ):
        assert best <= target <= half <= start
    for row in rows:
        assert math.isfinite(row.final_loss) and 0.0 <= row.final_top1 <= 1.0
        assert row.per_seed["final_loss"] == [row.final_loss]  # one seed: the mean is the seed
    table = format_table(rows, meta)
    assert "| white-box |" in table and "critical history at m = 10" in table
    assert "| prior-guided (proxy) |" in table
    # the buffer holds m = 10 estimates of 9,067 float32 parameters once full (budget 8 = 4 steps)
    assert meta["history_bytes"] == 4 * 9067 * 4
    assert 0.0 < meta["history_share_of_step_peak"] < 1.0


def test_a_transient_dip_does_not_count_as_reaching_the_target() -> None:
    curve = [(2, 5.0), (4, 1.0), (6, 5.0), (8, 2.0), (10, 1.5), (12, 1.8)]
    assert queries_to_target(curve, target=2.0, hold=3) == 8.0
    assert queries_to_target(curve, target=2.0, hold=1) == 4.0
    assert queries_to_target(curve, target=0.5) == float("inf")


def test_peak_step_bytes_sees_the_largest_live_set() -> None:
    def step() -> float:
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB more while a lives
        del a
        c = torch.ones(500, 500)  # 1 MB after a is freed
        return float(b.sum() + c.sum())

    assert 8_000_000 <= peak_step_bytes(step) < 8_000_100  # + the scalars of the sums


def test_the_white_box_gradient_flows_into_the_head(task_factory) -> None:
    state = torch.random.get_rng_state()
    task = task_factory(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # building a task leaves it alone
    gradient = task.true_gradient(task.start)
    assert gradient.shape == task.start.shape and float(gradient.norm()) > 0
    prior = task.prior(task.start)  # the proxy's gradient: another model, the same parameters
    assert prior.shape == gradient.shape and not torch.equal(prior, gradient)


@pytest.mark.slow
def test_bench_on_the_training_objective_compares_estimators_at_equal_calls(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    from privacy_lit.bench import zo_training

    tiny_args = [
        "--config", TINY_CONFIG, *(f"--{s}" for s in tiny.settings()),
        "--trainer.limit_train_batches=2", "--model.recon_epochs=1", "--model.reviewer_epochs=1",
        "--trainer.max_epochs=3",
    ]  # fmt: skip
    only = ["no signal (control)", "prior-guided (proxy)", "SPSA (no history)"]
    rows = zo_training.run("conf/demo.yaml", tmp_path, 1, 1, tiny_args, only=only, surrogate=False)
    by_name = {r.method: r for r in rows}
    assert set(by_name) == set(only)
    # each row's own arguments reach its model (not the pre-training checkpoint's hyper-parameters)
    (hparams,) = tmp_path.glob("SPSA-seed0/lightning_logs/version_*/hparams.yaml")
    assert "use_history: false" in hparams.read_text()
    control, guided = by_name["no signal (control)"], by_name["prior-guided (proxy)"]
    assert control.calls_per_sample == guided.calls_per_sample  # the same budget of queries
    assert control.median_cosine == [0.0]  # a zero direction carries no signal
    assert -1.0 <= guided.median_cosine[0] <= 1.0
    finished = sorted(tmp_path.rglob("results.json"))
    again = zo_training.run("conf/demo.yaml", tmp_path, 1, 1, tiny_args, only=only, surrogate=False)
    assert sorted(tmp_path.rglob("results.json")) == finished  # finished runs are not redone
    assert [r.top1 for r in again] == [r.top1 for r in rows]
    assert "| prior-guided (proxy) | 1 |" in zo_training.format_table(rows)


def test_fractions_of_spsa_are_per_seed_and_bounded_where_spsa_never_got_there() -> None:
    assert fraction_of_spsa(4.0, 40.0, budget=160) == (0.1, False)
    assert fraction_of_spsa(16.0, math.inf, budget=160) == (0.1, True)  # SPSA needs > 160
    assert fraction_of_spsa(math.inf, 4.0, budget=160) == (math.inf, False)
    spsa, ours = (
        BenchRow(name, 0, 0, 0, 0, 0, 0, 0, 0, {"queries_to_half": h, "queries_to_target": t})
        for name, h, t in (
            ("SPSA", [40.0, 2.0], [math.inf, 4.0]),
            ("ours", [3.0, 6.0], [9.0, 18.0]),
        )
    )
    _, line = per_seed_versus_spsa([spsa, ours], spsa, budget=160)
    assert "3.0 (0.07) / 9.0 (≤ 0.06); 6.0 (3.00) / 18.0 (4.50)" in line
    assert line.endswith("both ≤ 1/5 of SPSA's on 1 of 2 seeds")


def test_the_mean_fraction_of_spsa_is_a_bound_where_spsa_never_got_there() -> None:
    spsa = BenchRow("SPSA", 0, 0, 0, 0, 0, 0, 0, 0, {"q": [40.0, math.inf]})
    ours = BenchRow("ours", 0, 0, 0, 0, 0, 0, 0, 0, {"q": [4.0, 16.0]})
    assert mean_fraction_of_spsa(ours, spsa, 160, "q") == (10.0 / 100.0, True)  # SPSA ≥ 160
    assert mean_fraction_of_spsa(spsa, ours, 160, "q") == (math.inf, False)
