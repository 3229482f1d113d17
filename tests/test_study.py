import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from study.profiles import PROFILES
from study.specs import STUDIES, expand
from trainers.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# The tiny profile on the synthetic set: 600 16x16 images, small enough for seconds-long trials.
SYNTHETIC = ["--set", "dataset=synthetic", "--set", "image_size=16", "--set", "clusters_per_class=2",
             "--set", "min_cluster_size=5", "--set", "batch_size=64"]


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "study.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_sampling_expands_to_values_times_seeds():
    trials = expand(STUDIES["sampling"], PROFILES["tiny"], seeds=3, overrides={"lr": 0.05})
    assert len(trials) == 12
    assert [(t.value, t.seed) for t in trials[:4]] == [("hard", 0), ("hard", 1), ("hard", 2), ("semi-hard", 0)]
    for trial in trials:
        assert trial.config.negative_sampling == trial.value and trial.config.seed == trial.seed
        assert trial.config.lr == 0.05  # --set wins over the profile
        assert trial.config.epochs == PROFILES["tiny"].settings["epochs"]
        assert trial.config.loss_lambda == 0.75 and trial.config.inter_margin == 0.0  # the study's fixed settings
    assert len({t.config.config_hash() for t in trials}) == 12


@pytest.mark.parametrize("overrides, message", [
    ({"negative_sampling": "hard"}, "varies"),
    ({"seed": 3}, "--seeds"),
    ({"pool_fraction": 1.5}, "pool_fraction"),
    ({"not_a_key": 1}, "unknown config key"),
])
def test_expansion_rejects_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        expand(STUDIES["sampling"], PROFILES["tiny"], seeds=1, overrides=overrides)


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path):
    result = run_cli("sampling", "--dry-run", "--seeds", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "8 trials" in result.stdout
    assert result.stdout.count("negative_sampling=") == 8
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["nonexistent"], "unknown study"),
    (["sampling", "--scale", "huge"], "unknown scale"),
    (["sampling", "--set", "bogus=1"], "unknown config key"),
    (["sampling", "--set", "lr=fast"], "not a valid float"),
    (["sampling", "--set", "lr"], "KEY=VALUE"),
    (["sampling", "--set", "pool_fraction=0"], "pool_fraction"),
    (["sampling", "--set", "pool_fraction=1.2"], "pool_fraction"),
    (["sampling", "--set", "loss_lambda=2"], "loss_lambda"),
    (["sampling", "--seeds", "0"], "seeds"),
    (["sampling", "--epochs", "-1"], "epochs"),
    (["sampling", *SYNTHETIC, "--set", "num_negatives=100"], "num_negatives"),
    (["sampling", *SYNTHETIC, "--set", "clusters_per_class=100"], "clusters"),
    (["sampling", "--set", "dataset=imagefolder"], "data_root"),
    (["sampling", "--set", "data_root={tmp}/no-data-here"], "Fashion-MNIST not found"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli(*args, "--out", str(out), "--ray-dir", str(tmp_path / "ray"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "ray").exists()


def test_study_runs_end_to_end_through_ray_tune(tmp_path):
    out = tmp_path / "sampling"
    result = run_cli("sampling", "--seeds", "1", "--epochs", "1", *SYNTHETIC, "--out", str(out),
                     "--ray-dir", str(tmp_path / "ray"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_parquet(out / "trials.parquet")
    # 4 strategies x 1 seed x epochs {0, 1}: every trial x epoch exactly once.
    assert len(table) == 8
    assert sorted(table.groupby("value").size().to_dict().items()) == [
        ("hard", 2), ("random", 2), ("semi-easy", 2), ("semi-hard", 2)]
    assert table.duplicated(["config_hash", "epoch"]).sum() == 0
    for column in ("study", "factor", "value", "seed", "epoch", "knn_top1", "svm_map", "config_hash",
                   "code_version", "loss", "iter_time_s"):
        assert column in table.columns, column
    assert table["svm_map"].notna().all()  # evaluated at epoch 0 and the final epoch
    assert (out / "fig6b.png").stat().st_size > 0 and (out / "fig6b.pdf").exists()
    assert "python -m study.run sampling" in (out / "RUN.md").read_text()
    assert pd.read_csv(out / "trials.csv").shape == table.shape
