"""``python -m privacy_lit sweep conf/sweeps/gamma.yaml``: run a W&B sweep file without a server.

The files in ``conf/sweeps/`` are standard W&B sweep configurations (``wandb sweep FILE`` and
``wandb agent ID`` run them on a W&B server, in parallel). A W&B sweep needs that server even when
runs log offline; this runner needs nothing: it expands the same file itself and runs every
configuration one after another, with the arguments formatted exactly as the W&B agent formats
them (``--model.gamma=0.3``), then gathers every run's ``results.json`` into one summary:

    python -m privacy_lit sweep conf/sweeps/gamma.yaml                     # the whole grid
    python -m privacy_lit sweep conf/sweeps/gamma.yaml --set trainer.max_epochs=4
    python -m privacy_lit sweep FILE --count 8 --seed 1                     # random/bayes: 8 draws
    python -m privacy_lit sweep FILE --dry-run                              # print the commands

``grid`` runs the cartesian product of every parameter's ``values`` (``--count`` keeps the first
N). ``random`` draws ``--count`` configurations (``values``, with optional ``probabilities``, or a
distribution: ``uniform``, ``int_uniform``, ``q_uniform``, ``log_uniform``, ``log_uniform_values``,
``q_log_uniform_values``, ``normal``, ``q_normal``, ``log_normal``). ``bayes`` needs a W&B server's
model of past runs, so here it draws at random like ``random`` and says so.

Each run goes through ``privacy_lit.cli`` in a fresh Python process (``--in-process`` runs it in
this one: faster to start, but every run then shares the interpreter's state). Runs are grouped
in W&B under the sweep's name (``WANDB_RUN_GROUP``). The summary (``--out``, default
``runs/sweeps/<name>/summary.json``) is rewritten after every run, so an interrupted sweep keeps
what it finished; it holds per run: ``parameters``, ``args``, ``status``, ``log_dir``, and the
``rows`` / ``mllm`` / ``zo_steps`` of its ``results.json`` (the input of
:mod:`privacy_lit.analysis.pareto`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

METHODS = ("grid", "random", "bayes")
_MACROS = ("${env}", "${interpreter}")


class SweepError(ValueError):
    """A sweep file or a command line the runner cannot use; the message says which and why."""


@dataclass
class Sweep:
    """A parsed W&B sweep file: what to run and which parameters to vary."""

    path: Path
    name: str
    method: str
    command: list[str]
    parameters: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def cli_template(self) -> list[str]:
        """The command's words after ``-m privacy_lit`` (``${args}`` still in place)."""
        words = [str(w) for w in self.command]
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "privacy_lit":
                before, rest = words[:i], words[i + 2 :]
                break
        else:
            raise SweepError(
                f"{self.path}: the command must run `-m privacy_lit ...` (got {words}); this "
                "runner calls privacy_lit.cli with the words that follow"
            )
        unknown = [w for w in before if w not in _MACROS]
        if unknown:
            raise SweepError(f"{self.path}: unsupported words before `-m privacy_lit`: {unknown}")
        if rest.count("${args}") != 1:
            raise SweepError(f"{self.path}: the command must contain `${{args}}` once: {words}")
        other = [w for w in rest if w.startswith("${") and w != "${args}"]
        if other:
            raise SweepError(f"{self.path}: unsupported macros {other} (only ${{args}} is)")
        return rest


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a W&B sweep file (``method``, ``command``, ``parameters``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SweepError(f"cannot read sweep file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise SweepError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping, got {type(raw).__name__}")
    method = raw.get("method")
    if method not in METHODS:
        raise SweepError(f"{path}: method must be one of {METHODS}, got {method!r}")
    command = raw.get("command")
    if not isinstance(command, list) or not command:
        raise SweepError(f"{path}: `command` must be a list of words, got {command!r}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"{path}: `parameters` must be a non-empty mapping")
    for name, spec in parameters.items():
        _check_parameter(path, name, spec, method)
    sweep = Sweep(path, str(raw.get("name") or path.stem), method, command, parameters, raw)
    sweep.cli_template  # noqa: B018 - validates the command now rather than at the first run
    return sweep


_DISTRIBUTIONS = {
    "uniform", "int_uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform_values", "normal", "q_normal", "log_normal",
}  # fmt: skip
"""Distributions drawn from min/max (or mu/sigma); ``constant`` and ``categorical`` are the
``value`` / ``values`` forms, checked before."""


def _check_parameter(path: Path, name: str, spec: Any, method: str) -> None:
    where = f"{path}: parameter {name!r}"
    if not isinstance(spec, dict):
        raise SweepError(f"{where} must be a mapping (value, values or distribution)")
    if "parameters" in spec:
        raise SweepError(f"{where}: nested parameters are not supported; use dotted names")
    if "value" in spec:
        return
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: `values` must be a non-empty list")
        probabilities = spec.get("probabilities")
        if probabilities is not None and (
            len(probabilities) != len(values) or not math.isclose(sum(probabilities), 1.0)
        ):
            raise SweepError(f"{where}: `probabilities` must match `values` and sum to 1")
        return
    distribution = spec.get("distribution")
    if distribution is None and {"min", "max"} <= spec.keys():
        distribution = (
            "int_uniform" if all(isinstance(spec[k], int) for k in ("min", "max")) else ("uniform")
        )
        spec["distribution"] = distribution
    if distribution not in _DISTRIBUTIONS:
        raise SweepError(f"{where}: needs `value`, `values` or a known distribution")
    if method == "grid":
        raise SweepError(f"{where}: a grid sweep needs `values`, not a {distribution} distribution")


def _draw(spec: dict[str, Any], rng: random.Random) -> Any:
    """One value of a parameter, as W&B's random search draws it."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    kind = spec["distribution"]
    lo, hi, q = spec.get("min"), spec.get("max"), spec.get("q", 1)
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    if kind == "uniform":
        return rng.uniform(lo, hi)
    if kind == "int_uniform":
        return rng.randint(lo, hi)
    if kind == "q_uniform":
        return round(rng.uniform(lo, hi) / q) * q
    if kind == "log_uniform":  # min and max are exponents of e
        return math.exp(rng.uniform(lo, hi))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if kind == "q_log_uniform_values":
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))) / q) * q
    if kind == "normal":
        return rng.gauss(mu, sigma)
    if kind == "q_normal":
        return round(rng.gauss(mu, sigma) / q) * q
    if kind == "log_normal":
        return math.exp(rng.gauss(mu, sigma))
    raise SweepError(f"distribution {kind!r} needs `values` or `value`")


def configurations(sweep: Sweep, count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter sets to run: the grid (first ``count`` of it), or ``count`` random draws."""
    names = list(sweep.parameters)
    if sweep.method == "grid":
        axes = [
            [spec["value"]] if "value" in spec else list(spec["values"])
            for spec in sweep.parameters.values()
        ]
        grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        return grid if count is None else grid[:count]
    if count is None or count < 1:
        raise SweepError(f"a {sweep.method} sweep needs --count N (how many runs to draw)")
    rng = random.Random(seed)
    return [{n: _draw(sweep.parameters[n], rng) for n in names} for _ in range(count)]


def format_args(parameters: dict[str, Any]) -> list[str]:
    """``--name=value`` for every parameter, exactly as the W&B agent fills ``${args}``."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

        return create_sweep_command_args(
            {"args": {k: {"value": v} for k, v in parameters.items()}}
        )["args"]
    except ImportError:  # same format, for environments without wandb
        return [f"--{k}={v}" for k, v in parameters.items()]


def parse_overrides(items: Sequence[str], swept: Sequence[str] = ()) -> dict[str, str]:
    """``key=value`` pairs of ``--set``; a key that the sweep varies is an error, not a silent
    override of every run's value."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise SweepError(f"--set takes key=value (e.g. trainer.max_epochs=4), got {item!r}")
        if key in swept:
            raise SweepError(f"--set {key} would override the swept parameter {key!r}")
        overrides[key] = value
    return overrides


def run_arguments(sweep: Sweep, parameters: dict[str, Any], overrides: dict[str, str]) -> list[str]:
    """The ``privacy_lit.cli`` arguments of one run: the command with ``${args}`` filled in, then
    the ``--set`` overrides (last, so they win over the config file)."""
    args = []
    for word in sweep.cli_template:
        args += format_args(parameters) if word == "${args}" else [word]
    return args + [f"--{k}={v}" for k, v in overrides.items()]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _finish_wandb() -> None:
    """End a W&B run an in-process fit left open: Lightning does not finish it, and the next
    WandbLogger would otherwise log into the same run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _run_in_process(args: list[str]) -> str | None:
    from privacy_lit.cli import main as cli_main

    try:
        cli = cli_main(args)
    finally:
        _finish_wandb()
    trainer = getattr(cli, "trainer", None)
    return None if trainer is None else trainer.log_dir


def _child(argv: list[str]) -> int:
    """Subprocess entry: run the CLI, then write the trainer's log directory to ``argv[0]``."""
    report, args = Path(argv[0]), argv[1:]
    sys.argv = sys.argv[:1]  # the arguments go to the CLI as ``args``, not through sys.argv too
    log_dir = _run_in_process(args)
    report.write_text(json.dumps({"log_dir": log_dir}))
    return 0


def _run_subprocess(args: list[str]) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        code = "import sys; from privacy_lit.sweep import _child; sys.exit(_child(sys.argv[1:]))"
        process = subprocess.run([sys.executable, "-c", code, str(report), *args], check=False)
        if process.returncode != 0:
            raise RuntimeError(f"the run exited with code {process.returncode}")
        if not report.is_file():
            raise RuntimeError("the run ended without reporting its log directory")
        return json.loads(report.read_text())["log_dir"]


def _collect(log_dir: str | None, results_name: str) -> dict[str, Any]:
    if log_dir is None:
        return {"log_dir": None, "results_file": None, "rows": None}
    log_dir = str(Path(log_dir).resolve())  # the summary is read from elsewhere (a notebook)
    path = Path(log_dir) / results_name
    if not path.is_file():
        return {
            "log_dir": log_dir,
            "results_file": None,
            "rows": None,
            "note": f"no {results_name} in {log_dir} (is PrivacyUtilityReport a callback?)",
        }
    results = json.loads(path.read_text())
    return {"log_dir": log_dir, "results_file": str(path), **results}


def run_sweep(
    sweep: Sweep,
    runs: list[dict[str, Any]],
    overrides: dict[str, str],
    out: Path,
    in_process: bool = False,
    fail_fast: bool = False,
    results_name: str = "results.json",
) -> dict[str, Any]:
    """Run every configuration in order, rewriting the summary at ``out`` after each."""
    summary: dict[str, Any] = {
        "sweep": sweep.name,
        "file": str(sweep.path),
        "method": sweep.method,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "overrides": overrides,
        "runs": [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for index, parameters in enumerate(runs):
        args = run_arguments(sweep, parameters, overrides)
        print(f"[sweep {sweep.name}] run {index + 1}/{len(runs)}: {parameters}", flush=True)
        record: dict[str, Any] = {"index": index, "parameters": parameters, "args": args}
        start = time.perf_counter()
        env = {"WANDB_RUN_GROUP": sweep.name, "WANDB_NAME": f"{sweep.name}-{index:03d}"}
        try:
            with _environment(env):
                log_dir = _run_in_process(args) if in_process else _run_subprocess(args)
            record |= {"status": "ok", **_collect(log_dir, results_name)}
        except (Exception, SystemExit) as error:  # noqa: BLE001 - a failed run must not end the sweep
            record |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            print(f"[sweep {sweep.name}] run {index + 1} failed: {record['error']}", flush=True)
        record["seconds"] = round(time.perf_counter() - start, 3)
        summary["runs"].append(record)
        out.write_text(json.dumps(summary, indent=2, default=str))
        if fail_fast and record["status"] != "ok":
            break
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit sweep",
        description="Run a W&B sweep file sequentially without a W&B server.",
    )
    parser.add_argument("file", type=Path, help="a W&B sweep YAML, e.g. conf/sweeps/gamma.yaml")
    parser.add_argument("--count", type=int, help="grid: first N runs; random/bayes: N draws")
    parser.add_argument("--seed", type=int, default=0, help="seed of random/bayes draws")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="an argument for every run (e.g. trainer.max_epochs=4); repeatable",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="summary JSON (runs/sweeps/<name>/summary.json)")
    parser.add_argument("--in-process", action="store_true", help="run fits in this process")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    parser.add_argument("--results-name", default="results.json", help="each run's results file")
    parser.add_argument("--dry-run", action="store_true", help="print the runs' commands only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        sweep = load_sweep(args.file)
        overrides = parse_overrides(args.overrides, list(sweep.parameters))
        runs = configurations(sweep, args.count, args.seed)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if sweep.method == "bayes":
        print("note: bayes search needs a W&B server; drawing the configurations at random")
    if args.dry_run:
        for parameters in runs:
            words = ["python", "-m", "privacy_lit", *run_arguments(sweep, parameters, overrides)]
            print(shlex.join(words))
        return 0
    out = args.out or Path("runs") / "sweeps" / sweep.name / "summary.json"
    summary = run_sweep(
        sweep, runs, overrides, out, args.in_process, args.fail_fast, args.results_name
    )
    failed = [r["index"] for r in summary["runs"] if r["status"] != "ok"]
    print(f"[sweep {sweep.name}] {len(summary['runs']) - len(failed)} runs ok, "
          f"{len(failed)} failed{' ' + str(failed) if failed else ''}; summary {out}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
