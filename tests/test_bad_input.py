"""The bad-input catalogue: every case gives one line naming the problem and the fix, exit code 2,
launches nothing, and changes no file."""

import gzip
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from PIL import Image

from study import ledger, submit
from study import run as study_run
from study.profiles import PROFILES
from study.catalogue import STUDIES
from study.specs import expand
from trainers import fit as trainers_fit
from trainers.config import parse_assignment

ROOT = Path(__file__).resolve().parents[1]
# The tiny profile on the synthetic set, so these cases need no dataset download.
SYNTHETIC = ["--set", "dataset=synthetic", "--set", "image_size=16", "--set", "clusters_per_class=2",
             "--set", "min_cluster_size=5", "--set", "batch_size=64"]


def planned_trials(study="sampling"):
    overrides = dict(parse_assignment(a) for a in SYNTHETIC[1::2])
    return expand(STUDIES[study], PROFILES["tiny"], 3, overrides)


def manifest(tmp, status="finished", hashes=None, run_folder=None):
    trials = planned_trials()
    return ledger.Manifest(study="sampling", scale="tiny", run_folder=str(run_folder or tmp / "storage" / "run"),
                           config_hashes=hashes or [t.config.config_hash() for t in trials], status=status,
                           command="python -m study.run sampling", code_version="test")


def results_of(tmp, study):
    out = tmp / "out"
    out.mkdir()
    pd.DataFrame({"study": [study], "config_hash": ["0123456789ab"], "epoch": [0]}).to_parquet(out / "trials.parquet")


def unfinished_run(tmp):
    manifest(tmp, status="running").save(tmp / "out")
    (tmp / "storage" / "run").mkdir(parents=True)


def state_file(tmp):
    unfinished_run(tmp)
    path = ledger.trial_state(tmp / "storage" / "run", planned_trials()[0]).path
    path.parent.mkdir(parents=True)
    return path


def corrupt_state(tmp):
    state_file(tmp).write_bytes(b"not a torch file")


def other_config_state(tmp):
    torch.save({"epoch": 0, "rows": [{"epoch": 0}], "config_hash": "0123456789ab"}, state_file(tmp))


def image_tree(tmp, corrupt=False, mismatched=False):
    for split in ("train", "test"):
        for label in ("a", "b") if not (mismatched and split == "test") else ("a", "c"):
            folder = tmp / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    if corrupt:
        (tmp / "images" / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n garbage")


def corrupt_idx(tmp):
    folder = tmp / "fmnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(folder / name, "wb") as f:
            f.write(b"\x00\x00\x08")  # three bytes of a header: truncated


IMAGEFOLDER = ["--set", "dataset=imagefolder", "--set", "data_root={tmp}/images", "--set", "load_size=16",
               "--set", "image_size=16", "--set", "batch_size=4", "--set", "clusters_per_class=1",
               "--set", "min_cluster_size=2", "--set", "num_negatives=1", "--set", "pool_fraction=1"]

CASES = {  # name: (study.run arguments, words the error must contain, set-up of the tmp folder)
    # command line
    "unknown study": (["nonexistent"], "unknown study", None),
    "unknown scale": (["sampling", "--scale", "huge"], "unknown scale", None),
    "zero seeds": (["sampling", "--seeds", "0"], "seeds", None),
    "negative epochs": (["sampling", "--epochs", "-1"], "epochs", None),
    "negative retries": (["sampling", "--max-failures", "-1"], "--max-failures", None),
    "zero checkpoint interval": (["sampling", "--checkpoint-every", "0"], "--checkpoint-every", None),
    "crash beyond the last epoch": (["sampling", "--epochs", "3", "--inject-crash", "5"], "--inject-crash", None),
    "GPU share Ray cannot schedule": (["sampling", "--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5", None),
    "no GPU for a GPU trial": (["sampling", "--scale", "cifar", "--gpus-per-trial", "0"], "device=cpu", None),
    # config values
    "unknown key": (["sampling", "--set", "bogus=1"], "unknown config key", None),
    "not a float": (["sampling", "--set", "lr=fast"], "not a valid float", None),
    "not KEY=VALUE": (["sampling", "--set", "lr"], "KEY=VALUE", None),
    "setting the varied factor": (["sampling", "--set", "negative_sampling=hard"], "varies", None),
    "empty pool": (["sampling", "--set", "pool_fraction=0"], "pool_fraction", None),
    "pool over 1": (["sampling", "--set", "pool_fraction=1.2"], "pool_fraction", None),
    "lambda over 1": (["sampling", "--set", "loss_lambda=2"], "loss_lambda", None),
    "deputy rank beyond the batch": (["rank-k", "--set", "batch_size=4"], "lower the rank", None),
    "more negatives than the bank": (["sampling", *SYNTHETIC, "--set", "num_negatives=100"], "num_negatives", None),
    "more clusters than images": (["sampling", *SYNTHETIC, "--set", "clusters_per_class=100"], "clusters", None),
    "no evaluation interval": (["sampling", "--set", "eval_every=0"], "eval_every", None),
    "SVM subset too small for its folds": (["sampling", *SYNTHETIC, "--set", "svm_train_size=20"],
                                           "raise svm_train_size", None),
    # datasets
    "imagefolder without a root": (["sampling", "--set", "dataset=imagefolder"], "data_root", None),
    "no Fashion-MNIST there": (["sampling", "--set", "data_root={tmp}/no-data-here"], "Fashion-MNIST not found",
                               None),
    "truncated IDX file": (["sampling", "--set", "data_root={tmp}/fmnist"], "cannot read IDX", corrupt_idx),
    "corrupt image file": (["sampling", *IMAGEFOLDER], "cannot read image", lambda t: image_tree(t, corrupt=True)),
    "train and test classes differ": (["sampling", *IMAGEFOLDER], "class folders differ",
                                      lambda t: image_tree(t, mismatched=True)),
    # output folders and storage
    "output is a file": (["sampling", *SYNTHETIC], "is a file", lambda t: (t / "out").write_text("x")),
    "unwritable output": (["sampling", *SYNTHETIC, "--out", "{tmp}/blocker/out"], "cannot write to output",
                          lambda t: (t / "blocker").write_text("a file, so nothing can be made under it")),
    "unwritable storage": (["sampling", *SYNTHETIC, "--storage", "{tmp}/blocker/runs"], "cannot write to --storage",
                           lambda t: (t / "blocker").write_text("x")),
    "output holds other files": (["sampling", *SYNTHETIC], "not study results",
                                 lambda t: (t / "out").mkdir() or (t / "out" / "notes.txt").write_text("mine")),
    # mixing incompatible results
    "another study's results": (["sampling", *SYNTHETIC], "results of study 'labels'",
                                lambda t: results_of(t, "labels")),
    "another configuration's results": (["sampling", *SYNTHETIC], "different configuration",
                                        lambda t: results_of(t, "sampling")),
    "resume after changing a setting": (["sampling", *SYNTHETIC, "--set", "lr=0.05", "--resume"],
                                        "different configuration", unfinished_run),
    "unfinished run without --resume": (["sampling", *SYNTHETIC], "add --resume", unfinished_run),
    # resuming and checkpoints
    "nothing to resume": (["sampling", *SYNTHETIC, "--resume"], "nothing to resume", None),
    "run folder gone": (["sampling", *SYNTHETIC, "--resume"], "is gone",
                        lambda t: manifest(t, status="running").save(t / "out")),
    "damaged run.json": (["sampling", *SYNTHETIC, "--resume"], "run.json is unreadable",
                         lambda t: (t / "out").mkdir() or (t / "out" / "run.json").write_text("{")),
    "corrupt trial checkpoint": (["sampling", *SYNTHETIC, "--resume"], "unreadable", corrupt_state),
    "checkpoint of another config": (["sampling", *SYNTHETIC, "--resume"], "different config", other_config_state),
}


def files_under(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, capsys, name):
    args, words, setup = CASES[name]
    if setup:
        setup(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    defaults = []
    for flag, value in (("--out", tmp_path / "out"), ("--storage", tmp_path / "storage")):
        if flag not in args:
            defaults += [flag, str(value)]
    before = files_under(tmp_path)
    code = study_run.main([*args, *defaults])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], captured.err
    assert files_under(tmp_path) == before
    assert not ray.is_initialized()


def test_fit_refuses_a_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "state.pt").write_bytes(b"\x00" * 10)
    code = trainers_fit.main(["--set", "dataset=synthetic", "--set", "method=truncated-triplet", "--set",
                              "batch_size=64", "--checkpoint-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unreadable" in err[0] and "delete it" in err[0]


def test_submit_checks_the_study_before_contacting_a_cluster(capsys):
    assert submit.main(["--address", "http://127.0.0.1:9", "sampling", "--set", "lr=fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid float" in err[0]


def test_submit_names_an_unreachable_cluster(capsys):
    assert submit.main(["--address", "http://127.0.0.1:9", "sampling"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Ray cluster" in err[0]


def test_the_real_process_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "study.run", "sampling", "--set", "lr=fast", "--out",
                             str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "lr='fast'" in result.stderr
    assert not (tmp_path / "out").exists()
