"""The experiment runner: finished steps are read back, a failed run does not lose the others, mean and spread."""

from __future__ import annotations

import json
import math

import pytest

from bundle.experiments.runner import (
    Comparison,
    ExperimentError,
    Steps,
    cell,
    claim_work_dir,
    mean_std,
    seeded_runs,
    summarise,
)


class Recorder:
    """A run per (arm, seed) that writes ``metrics.json`` and counts its calls; ``broken`` ones raise."""

    def __init__(self, folder, broken=()):
        self.folder, self.broken, self.calls = folder, set(broken), []

    def path(self, arm, seed):
        return self.folder / arm / f"seed_{seed}" / "metrics.json"

    def run(self, arm, seed):
        self.calls.append((arm, seed))
        if (arm, seed) in self.broken:
            raise RuntimeError(f"{arm} seed {seed} broke")
        self.path(arm, seed).parent.mkdir(parents=True, exist_ok=True)
        self.path(arm, seed).write_text(json.dumps({"dice": 0.5 + 0.1 * seed + (0.2 if arm == "b" else 0.0)}))
        return {"arm": arm}

    def result(self, arm, seed):
        return json.loads(self.path(arm, seed).read_text())

    def runs(self, steps, arms=("a", "b"), seeds=(0, 1, 2)):
        return seeded_runs(
            steps, arms, seeds, self.run, self.result, lambda a, s: self.path(a, s).is_file(), prefix="segment"
        )


def test_a_failed_run_does_not_lose_the_others_and_is_retried(tmp_path):
    steps = Steps(tmp_path)
    recorder = Recorder(tmp_path / "out", broken={("a", 1)})
    results, failures = recorder.runs(steps)
    assert failures == {"segment_a_seed1": "RuntimeError: a seed 1 broke"}
    assert sorted(results["a"]) == [0, 2] and sorted(results["b"]) == [0, 1, 2]
    assert steps.failures() == failures
    assert "Traceback" in json.loads((tmp_path / "failed" / "segment_a_seed1.json").read_text())["traceback"]
    recorder.broken.clear()
    recorder.calls.clear()
    results, failures = recorder.runs(steps)
    assert recorder.calls == [("a", 1)], "only the failed run is run again"
    assert failures == {} and steps.failures() == {} and sorted(results["a"]) == [0, 1, 2]


def test_finished_steps_are_read_back_and_lost_outputs_redone(tmp_path):
    steps = Steps(tmp_path)
    recorder = Recorder(tmp_path / "out")
    first, _ = recorder.runs(steps)
    recorder.calls.clear()
    recorder.path("b", 2).unlink()  # as if killed after the step's record but before its output
    again, _ = recorder.runs(steps)
    assert recorder.calls == [("b", 2)]
    assert again == first
    assert set(steps.seconds()) == {f"segment_{a}_seed{s}" for a in "ab" for s in range(3)}
    assert steps.done("segment_a_seed0")["details"] == {"arm": "a"}


def test_a_step_that_raises_is_recorded_and_raised(tmp_path):
    steps = Steps(tmp_path)
    with pytest.raises(ZeroDivisionError):
        steps.run("data", lambda: 1 / 0)
    assert steps.done("data") is None and "ZeroDivisionError" in steps.failures()["data"]
    assert steps.run("data", lambda: {"ok": True})["details"] == {"ok": True}
    assert steps.failures() == {}


def test_mean_std_and_summary_over_seeds(tmp_path):
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std([None, 0.4, float("nan")]) == (0.4, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))
    results, _ = Recorder(tmp_path).runs(Steps(tmp_path))
    summary = summarise(results, ["dice", "absent"])
    assert summary["a"]["dice"] == pytest.approx((0.6, 0.1))
    assert summary["b"]["dice"] == pytest.approx((0.8, 0.1))
    assert all(math.isnan(v) for v in summary["a"]["absent"])
    assert cell(*summary["b"]["dice"]) == "0.800 ± 0.100" and cell(math.nan, math.nan) == "n/a"


def test_comparison_verdicts():
    clear = Comparison.of((0.8, 0.1), (0.6, 0.05))
    assert clear.clearly_above and clear.above and not clear.within_spread
    assert clear.difference == pytest.approx(0.2) and clear.spread == pytest.approx(0.1)
    close = Comparison.of((0.62, 0.04), (0.60, 0.01))
    assert close.above and not close.clearly_above and close.within_spread
    assert not Comparison.of((0.5, 0.0), (0.6, 0.0)).above


def test_a_work_folder_continues_one_run_only(tmp_path):
    claim_work_dir(tmp_path, {"settings": {"seeds": [0, 1]}})
    claim_work_dir(tmp_path, {"settings": {"seeds": [0, 1]}})
    with pytest.raises(ExperimentError, match="holds a run with other settings"):
        claim_work_dir(tmp_path, {"settings": {"seeds": [0]}})
