import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from catalogue import STUDIES
from study.profiles import PROFILES
from study.trials import expand
from trainers.config import ConfigError, parse_assignment
from trainers.fit import fit

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


EXPECTED_GRIDS = {  # study: (factor, recorded values, {key: value} the study fixes at the tiny scale)
    "labels": ("label_mode", ["online", "offline"], {"negative_sampling": "random", "inter_margin": 0.0}),
    "sampling": ("negative_sampling", ["hard", "semi-hard", "random", "semi-easy"], {"loss_lambda": 0.75}),
    "margin-intra": ("intra_margin", [-0.5, -0.25, 0.0, 0.25, 0.5], {"inter_margin": 0.0,
                                                                    "negative_sampling": "semi-hard"}),
    "margin-inter": ("inter_margin", [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5], {"intra_margin": 0.0}),
    "lambda": ("loss_lambda", [0.0, 0.25, 0.5, 0.75, 1.0], {"negative_sampling": "random"}),
    # The final recipe's inter margin -0.5 at K = 64, mapped: -0.5 ln(65) / ln(16385) = -0.5 x 4.1744 / 9.7041.
    "clusters": ("clusters_per_class", [1.0, 5.0, 10.0, 20.0], {"inter_margin": pytest.approx(-0.21508, abs=1e-5),
                                                                "num_negatives": 64}),
    "negatives": ("num_negatives", [1, 4, 16], {"negative_sampling": "semi-hard"}),
    "rank-k": ("deputy", ["rank-1", "rank-5", "median", "smoothed-5"], {"method": "truncated-triplet"}),
    "triplet-margin": ("triplet_margin", [-0.3, -1.2, -100.0], {"method": "truncated-triplet", "deputy": "median"}),
    "overclustering": ("deputy", ["rank-1", "rank-5", "median"], {"method": "truncated-triplet"}),
    "methods": ("method", ["npidv2", "npidv2-interclr", "mocov2", "mocov2-interclr", "byol", "byol-interclr"], {}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_GRIDS))
def test_every_study_expands_to_its_grid(name):
    factor, values, fixed = EXPECTED_GRIDS[name]
    trials = expand(STUDIES[name], PROFILES["tiny"], seeds=3)
    assert STUDIES[name].factor == factor
    assert [t.value for t in trials] == [v for v in values for _ in range(3)]
    assert [t.seed for t in trials] == [0, 1, 2] * len(values)
    for trial in trials:
        for key, value in fixed.items():
            assert getattr(trial.config, key) == value, key
    if name == "negatives":  # recorded as multiples of the profile's K = 16; the margin -0.5 mapped per K
        assert [t.config.num_negatives for t in trials[::3]] == [16, 64, 256]
        assert [t.config.inter_margin for t in trials[::3]] == pytest.approx([-0.17031, -0.21508, -0.25018], abs=1e-5)
    elif name in ("margin-intra", "margin-inter"):  # the paper's margins as values, x ln(17) / ln(4097) in the trials
        assert [getattr(t.config, factor) for t in trials[::3]] == pytest.approx([0.340612 * v for v in values])
    elif name == "methods":  # the final recipe's 4x negatives where a method takes them; MoCo's queue is its own
        # BYOL-InterCLR samples no negatives (InterCLR section 5.1), so only the other InterCLR methods take K
        assert [t.config.to_dict().get("num_negatives") for t in trials[::3]] == [64, 64, None, 64, None, None]
        assert [t.config.to_dict().get("queue_size") for t in trials[::3]] == [None, None, 512, 512, None, None]
    else:
        assert [getattr(t.config, factor) for t in trials[::3]] == values
    assert set(STUDIES) == set(EXPECTED_GRIDS)


def test_profiles_map_margins_to_their_negatives():
    """m -> m ln(K + 1) / ln(K_paper + 1), K_paper = K x 4096 / the profile's K (hand-computed logarithms)."""
    tiny, imagenet = PROFILES["tiny"], PROFILES["imagenet"]
    config = tiny.config(method="npidv2-interclr", inter_margin=-0.5, intra_margin=0.25)
    assert config.inter_margin == pytest.approx(-0.5 * 2.833213 / 8.318010)  # K = 16 for the paper's 4,096
    assert config.intra_margin == pytest.approx(0.25 * 2.833213 / 8.318010)
    assert tiny.config(method="npidv2-interclr", num_negatives=256).inter_margin == pytest.approx(
        -0.5 * 5.549076 / 11.090370)  # 16x K: 65,536 in the paper
    assert tiny.config(method="npidv2-interclr", inter_margin=0.0).inter_margin == 0.0
    assert imagenet.config(method="npidv2-interclr", inter_margin=-0.5).inter_margin == -0.5  # the paper's own K
    assert tiny.config(method="truncated-triplet", triplet_margin=-0.3).triplet_margin == -0.3  # not a MarginNCE


@pytest.mark.slow
def test_list_and_dry_run_of_all(tmp_path):
    listing = run_cli("--list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in STUDIES)
    assert "18 trials" in listing.stdout  # margin-inter and methods: 6 values x 3 seeds
    # Its own --out: the default folders hold whatever this checkout ran (`make run` writes runs/tiny/sampling,
    # and a dry run of other seeds into it is rightly refused).
    dry = run_cli("all", "--dry-run", "--seeds", "1", "--out", str(tmp_path / "out"))
    assert dry.returncode == 0 and dry.stdout.count("study ") == len(STUDIES)


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
    assert f"output folder: {tmp_path / 'out'}" in result.stdout
    assert "fixed settings:\n  method = npidv2-interclr\n" in result.stdout  # one setting per line
    assert "the plan: 8 trials" in result.stdout and "minutes" in result.stdout  # the cost model's estimate
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_study_runs_end_to_end_through_ray_tune(tmp_path):
    out = tmp_path / "sampling"
    result = run_cli("sampling", "--seeds", "1", "--epochs", "1", *SYNTHETIC, "--out", str(out),
                     "--storage", str(tmp_path / "ray"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_parquet(out / "trials.parquet")
    # 4 strategies x 1 seed x epochs {0, 1}: every trial x epoch exactly once.
    assert len(table) == 8
    assert sorted(table.groupby("value").size().to_dict().items()) == [
        ("hard", 2), ("random", 2), ("semi-easy", 2), ("semi-hard", 2)]
    assert table.duplicated(["config_hash", "epoch"]).sum() == 0
    for column in ("study", "factor", "value", "seed", "epoch", "knn_top1", "svm_map", "config_hash",
                   "code_version", "hostname", "torch_version", "ray_version", "loss", "iter_time_s", "linear_top1",
                   "eval_time_s", "eval_train_size", "eval_test_size", "svm_train_size", "probe_epochs"):
        assert column in table.columns, column
    assert table["svm_map"].notna().all()  # evaluated at epoch 0 and the final epoch
    assert (out / "fig6b.png").stat().st_size > 0 and (out / "fig6b.pdf").exists()
    assert "python -m study.run sampling" in (out / "RUN.md").read_text()
    assert "progress: 4 of 4 trials done, 0 running, 0 pending; epochs 8 of 8" in result.stdout
    assert pd.read_csv(out / "trials.csv").shape == table.shape

    # The same config and seed give the same numbers through Ray (with reused actors) and directly.
    overrides = dict(parse_assignment(a) for a in SYNTHETIC[1::2])
    direct_config = expand(STUDIES["sampling"], PROFILES["tiny"], 1, {**overrides, "epochs": 1})[1].config
    assert direct_config.negative_sampling == "semi-hard"
    direct = fit(direct_config)
    through_ray = table[table["config_hash"] == direct_config.config_hash()].sort_values("epoch")
    for metric in ("knn_top1", "svm_map", "linear_top1"):  # epoch 0's floor read from the run's cache, or not
        assert through_ray[metric].tolist() == [row[metric] for row in direct], metric
    # The 4 strategies of seed 0 start from the same network: one floor, measured once.
    assert len(list(tmp_path.glob("ray/*/floors/*.json"))) == 1
    assert through_ray["loss"].tolist()[1:] == [row["loss"] for row in direct[1:]]

    # The report regenerates the figure and writes CLAIMS.md; claims of studies not run read missing.
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--results", str(tmp_path),
                             "--scale", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    claims = (tmp_path / "CLAIMS.md").read_text()
    assert "Verdict rule" in claims and "sampling: semi-hard > hard" in claims and "missing" in claims


def test_a_study_stopped_midway_stops_the_rest_and_resume_starts_the_studies_never_begun(tmp_path, monkeypatch,
                                                                                       capsys):
    from study import run
    from study.safety import preflight

    # Two studies stand for `all`. A Tune run cut short before any trial ran (what Ctrl-C leaves):
    # every trial unfinished, none failed.
    names = ["labels", "sampling"]
    monkeypatch.setattr(run, "studies_named", lambda name, options: names)
    monkeypatch.setattr(run, "start_ray", lambda address: None)
    monkeypatch.setattr(run, "run_tune", lambda trials, options, run_folder: run_folder.mkdir(parents=True) or [])
    monkeypatch.setattr(run, "draw_figures", lambda study, out: [])
    args = ["all", "--seeds", "1", "--epochs", "1", *SYNTHETIC, "--out", str(tmp_path / "out"),
            "--storage", str(tmp_path / "runs")]
    assert run.main(args) == 1
    stderr = capsys.readouterr().err
    assert "stopped during labels; not started: sampling; continue with: " in stderr
    assert stderr.rstrip().endswith("--resume")
    assert (tmp_path / "out" / "labels" / "run.json").exists()
    assert not (tmp_path / "out" / "sampling" / "run.json").exists()

    options = run.parse_args([*args, "--resume"])
    plans = {name: run.plan(options, name) for name in names}
    outs = {name: tmp_path / "out" / name for name in names}
    resumed = preflight.check_launch(options, plans, outs)
    assert resumed["labels"] is not None and resumed["sampling"] is None  # continued; started afresh, not refused
    with pytest.raises(ConfigError, match="nothing to resume"):  # one study named alone must have begun
        preflight.check_launch(options, {"sampling": plans["sampling"]}, {"sampling": outs["sampling"]})


def test_the_checks_before_launch_step_every_setting_and_calibrate_each_initial_network_once(tmp_path, monkeypatch):
    import trainers.trial
    from study import run
    from study.safety import preflight
    from trainers.methods.truncated_triplet import TruncatedTriplet

    calibrations, steps = [], []
    calibrate, step = trainers.trial.calibrate_batch_norm, TruncatedTriplet.training_step
    monkeypatch.setattr(trainers.trial, "calibrate_batch_norm",
                        lambda *args, **keys: calibrations.append(1) or calibrate(*args, **keys))
    monkeypatch.setattr(TruncatedTriplet, "training_step", lambda *args: steps.append(1) or step(*args))
    # sampling and lambda both train NPIDv2-InterCLR from one initial network at seed 0;
    # rank-k (4 settings) trains the truncated triplet's.
    def options(*settings):
        return run.parse_args(["all", "--seeds", "2", "--epochs", "1", *settings, "--out", str(tmp_path / "out"),
                               "--storage", str(tmp_path / "runs")])

    names = ["sampling", "lambda", "rank-k"]
    plans = {name: run.plan(options(*SYNTHETIC), name) for name in names[:2]}
    # The truncated triplet has no cluster keys: the synthetic set's other settings alone.
    triplet_synthetic = ["--set", "dataset=synthetic", "--set", "image_size=16", "--set", "batch_size=64"]
    plans["rank-k"] = run.plan(options(*triplet_synthetic), "rank-k")
    preflight.check_launch(options(*SYNTHETIC), plans, {name: tmp_path / "out" / name for name in names})
    assert len(calibrations) == 2  # one per initial network, not one per study (3) or per setting
    # One step per truncated-triplet setting, none for the epoch-0 pass over the data (its metrics are not read).
    assert len(steps) == len({t.config.replace(seed=0).config_hash() for t in plans["rank-k"]}) == 4


def test_a_run_lands_beside_the_committed_results_unless_told_otherwise():
    from study.run import RunOptions, output_folder

    assert output_folder(RunOptions(study="sampling"), "sampling", several=False) == Path("runs/tiny/sampling")
    assert output_folder(RunOptions(study="all", scale="cifar"), "labels", several=True) == Path("runs/cifar/labels")
    named = RunOptions(study="sampling", out="results/tiny/sampling")
    assert output_folder(named, "sampling", several=False) == Path("results/tiny/sampling")


@pytest.mark.slow
def test_an_ad_hoc_sweep_runs_end_to_end_like_a_registered_study(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("--sweep", "inter_margin=-1,0", "--seeds", "1", "--epochs", "1", *SYNTHETIC, "--out", str(out),
                     "--storage", str(tmp_path / "ray"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_parquet(out / "trials.parquet")
    assert sorted(table["value"].unique()) == [-1, 0] and set(table["study"]) == {"sweep-inter_margin"}
    assert (out / "sweep-inter_margin.png").exists() and (out / "study.json").exists()
    assert "sweep-inter_margin: final svm_map per inter_margin" in result.stdout
    again = run_cli("--sweep", "inter_margin=-1,0", "--seeds", "1", "--epochs", "1", *SYNTHETIC, "--out", str(out),
                    "--storage", str(tmp_path / "ray"), "--resume")
    assert again.returncode == 0 and "2 of 2 trials already finished" in again.stdout


def test_sweeps_of_two_factors_cross_their_values_and_bad_ones_are_refused():
    from catalogue import sweep_study

    grid = sweep_study(["inter_margin=-1,0", "negative_sampling=hard,random"])
    assert grid.levels == ("-1, hard", "-1, random", "0, hard", "0, random")
    assert grid.settings_of(grid.values[1]) == {"inter_margin": -1, "negative_sampling": "random"}
    trials = expand(grid, PROFILES["tiny"], seeds=2)
    assert len(trials) == 8 and {t.config.negative_sampling for t in trials} == {"hard", "random"}
    for bad in (["inter_margin=-1"], ["=1,2"], ["lr=0.1,0.1"], ["a=1,2", "b=1,2", "c=1,2"], ["a=1,2", "a=3,4"]):
        with pytest.raises(ValueError):
            sweep_study(bad)
