"""`python -m study.run STUDY --seeds auto --max-seeds N`: rounds of seeds through Ray Tune, each
extending the same run, judged by analysis.sequential after every round."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Truncated-triplet trials on the synthetic set: seconds each.
SYNTHETIC = ["--epochs", "1", "--set", "dataset=synthetic", "--set", "image_size=16", "--set", "batch_size=64"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "study.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "auto"], "--seeds auto needs --max-seeds N"),
    (["--seeds", "auto", "--max-seeds", "2"], "--seeds auto needs --max-seeds N with N >= 3"),
    (["--seeds", "4", "--max-seeds", "7"], "--max-seeds N goes with --seeds auto"),
])
def test_bad_round_settings_are_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("triplet-margin", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_rounds_extend_one_run_until_the_last_look(tmp_path):
    # overclustering's comparisons have fixed margins (shares of queries), so with one epoch of training its
    # first look is undecided; a quality-metric study here would stop at once as not testable at this scale.
    out, storage = tmp_path / "out", tmp_path / "ray"
    args = ["overclustering", "--seeds", "auto", "--max-seeds", "4", *SYNTHETIC, "--out", str(out),
            "--storage", str(storage)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Round 1 (3 seeds) is judged at the boundary's first look and is undecided with one epoch of training;
    # round 2 (the schedule's last, as N = 4) adds seed 3 only.
    assert "overclustering: look at 3 of at most 4 seeds" in result.stdout
    assert "next round: 4 seeds per value" in result.stdout
    assert "resuming" in result.stdout and "9 of 12 trials already finished" in result.stdout
    assert "overclustering: look at 4 of at most 4 seeds" in result.stdout
    table = pd.read_parquet(out / "trials.parquet")
    assert sorted(table.groupby("value")["seed"].nunique().to_dict().items()) == [("median", 4), ("rank-1", 4),
                                                                                   ("rank-5", 4)]
    assert table.duplicated(["config_hash", "epoch"]).sum() == 0
    manifest = json.loads((out / "run.json").read_text())
    assert len(manifest["config_hashes"]) == 12 and manifest["status"] == "finished"
    assert json.loads((out / "looks.json").read_text()) == {"study": "overclustering", "max_seeds": 4, "seeds": [3, 4]}
    assert len(list((Path(manifest["run_folder"]) / "trials").iterdir())) == 12  # one run folder for both rounds

    # --resume finds the round the folder holds (4 seeds), reruns nothing and stops at the last look.
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "12 of 12 trials already finished" in resumed.stdout and "look at 3" not in resumed.stdout
    assert json.loads((out / "looks.json").read_text()) == {"study": "overclustering", "max_seeds": 4, "seeds": [3, 4]}
