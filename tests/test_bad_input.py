"""The bad-input catalogue: every case gives one line naming the problem and the fix, exit code 2,
launches nothing, prints no traceback, and changes no file or folder."""

import fcntl
import gzip
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from PIL import Image

from analysis import bernoulli
from analysis import report as analysis_report
from analysis import sequential
from catalogue import STUDIES
from study import outputs, rehash, submit
from study import run as study_run
from study.profiles import PROFILES
from study.safety import lock
from study.trials import expand
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
    return outputs.Manifest(study="sampling", scale="tiny", run_folder=str(run_folder or tmp / "storage" / "run"),
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
    path = outputs.trial_state(tmp / "storage" / "run", planned_trials()[0]).path
    path.parent.mkdir(parents=True)
    return path


def corrupt_state(tmp):
    state_file(tmp).write_bytes(b"not a torch file")


def other_config_state(tmp):
    torch.save({"epoch": 0, "rows": [{"epoch": 0}], "config_hash": "0123456789ab"}, state_file(tmp))


def image_tree(tmp, corrupt=False, mismatched=False, classes=("a", "b"), per_class=3):
    for split in ("train", "test"):
        for label in classes if not (mismatched and split == "test") else ("a", "c"):
            folder = tmp / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    if corrupt:
        (tmp / "images" / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n garbage")


def tree_with(tmp, change):
    image_tree(tmp)
    change(tmp / "images" / "train")


def truncated_jpeg(train):
    path = train / "a" / "0.jpg"
    Image.effect_noise((64, 64), 60).convert("RGB").save(path, quality=95)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # header intact, scan data cut


def declared_size(width, height):
    """A PNG whose header declares width x height pixels, with one row of data: opening it costs nothing."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (3 * width + 1)))
            + chunk(b"IEND", b""))


def no_class_folders(tmp):
    image_tree(tmp)
    for folder in (tmp / "images" / "train").iterdir():
        for image in folder.iterdir():
            image.rename(tmp / "images" / "train" / f"{folder.name}-{image.name}")
        folder.rmdir()


HELD = []  # open lock files of other "drivers", closed after each case


def held_lock(tmp, then=None):
    """Another process's lock on the output folder: an flock on its own open file, as a second driver holds."""
    if then:
        then(tmp)
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    descriptor = os.open(out / lock.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.write(descriptor, json.dumps({"host": "other-host", "pid": 4242, "started": "2026-01-01T00:00:00"}).encode())
    HELD.append(descriptor)


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
    "GPUs where there are none": (["sampling", "--gpus-per-trial", "8"],
                                  "--gpus-per-trial 8 asks for GPUs, but no CUDA device is visible", None),
    "more ranks than a batch has images": (["sampling", "--set", "data_parallel=200"],
                                           "data_parallel=200 ranks would leave some without an image", None),
    "a GPU share that is not a number": (["sampling", "--gpus-per-trial", "nan"], "--gpus-per-trial nan", None),
    "a dry run checks the launch too": (["sampling", "--scale", "cifar", "--dry-run"], "no CUDA device", None),
    "seeds beyond the cap": (["sampling", "--seeds", "100000000", "--dry-run"], "above the cap of 1000", None),
    "epochs beyond the cap": (["sampling", "--epochs", "99999999"], "must be in 0..10000", None),
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
    "run.json that is a folder": (["sampling", *SYNTHETIC, "--resume"], "run.json is unreadable",
                                  lambda t: (t / "out" / "run.json").mkdir(parents=True)),
    "run.json without its config hashes": (
        ["sampling", *SYNTHETIC, "--resume"], "is not a run record",
        lambda t: (t / "out").mkdir() or (t / "out" / "run.json").write_text(
            '{"study": "sampling", "scale": "tiny", "run_folder": "x", "config_hashes": null, "status": "running", '
            '"command": "c", "code_version": "v"}')),
    "--seeds auto on a corrupt table": (["sampling", "--seeds", "auto", "--max-seeds", "5"], "is unreadable",
                                        lambda t: (t / "out").mkdir() or (t / "out" / "trials.parquet")
                                        .write_bytes(b"PAR1 not really")),
    # The driver's bound assumes balanced clusters (57 here); the first step meets the real largest cluster.
    "settings that pass the checks but fail the first step": (
        ["sampling", *SYNTHETIC, "--set", "num_negatives=57"], "negative_sampling=semi-hard: num_negatives=57", None),
    "a sweep with one value": (["--sweep", "lr=0.1"], "at least two different values", None),
    "a study and a sweep": (["sampling", "--sweep", "lr=0.1,0.2"], "not both", None),
    "a sweep of an unknown key": (["--sweep", "bogus=1,2"], "unknown config key", None),
    "more CPUs than the machine has": (["sampling", "--set", "threads=4096"], "needs 4096 CPUs", None),
    "an --out name too long for the file system": (["sampling", "--out", "{tmp}/" + "o" * 300], "too long", None),
    "a --storage name too long for the file system": (["sampling", "--storage", "{tmp}/" + "s" * 300], "too long",
                                                      None),
    "a parse error": (["sampling", "--seeds", "three"], "neither a seed count nor auto", None),
    "damaged run.json": (["sampling", *SYNTHETIC, "--resume"], "run.json is unreadable",
                         lambda t: (t / "out").mkdir() or (t / "out" / "run.json").write_text("{")),
    "corrupt trial checkpoint": (["sampling", *SYNTHETIC, "--resume"], "unreadable", corrupt_state),
    "checkpoint of another config": (["sampling", *SYNTHETIC, "--resume"], "different config", other_config_state),
    # run.json names code version "test": this checkout's trials must not be labelled with it
    "resume under another code version": (["sampling", *SYNTHETIC, "--resume"], "was started by code test",
                                          unfinished_run),
    # command line, further
    "no study named": ([], "no study given", None),
    "empty --out": (["sampling", "--out", ""], "--out is empty", None),
    "empty --storage": (["sampling", "--storage", ""], "--storage is empty", None),
    "negative concurrency": (["sampling", "--max-concurrent", "-1"], "--max-concurrent", None),
    "listing with negative seeds": (["--list", "--seeds", "-1"], "--seeds -1", None),
    # non-finite and meaningless floats
    "infinite lr": (["sampling", "--set", "lr=inf"], "lr=inf is not a finite number", None),
    "nan lr": (["sampling", "--set", "lr=nan"], "lr=nan is not a finite number", None),
    "huge lr": (["sampling", "--set", "lr=100"], "lr=100.0 must be in (0, 10]", None),
    "infinite momentum": (["sampling", "--set", "momentum=inf"], "momentum=inf", None),
    "weight decay of 2": (["sampling", "--set", "weight_decay=2"], "weight_decay", None),
    "near-zero kNN temperature": (["sampling", "--set", "knn_temperature=1e-9"], "knn_temperature=1e-09 is below", None),
    "infinite kNN temperature": (["sampling", "--set", "knn_temperature=inf"], "knn_temperature=inf", None),
    "near-zero temperature": (["sampling", "--set", "temperature=1e-6"], "temperature=1e-06 is below", None),
    "nan temperature": (["sampling", "--set", "temperature=nan"], "temperature=nan", None),
    "inter margin beyond the cosine range": (["sampling", "--set", "inter_margin=5"], "inter_margin=5.0 is outside",
                                             None),
    "infinite inter margin": (["sampling", "--set", "inter_margin=-inf"], "inter_margin=-inf", None),
    "nan intra margin": (["sampling", "--set", "intra_margin=nan"], "intra_margin=nan", None),
    "infinite triplet margin": (["rank-k", "--set", "triplet_margin=inf"], "triplet_margin=inf", None),
    "zero triplet gamma": (["rank-k", "--set", "triplet_gamma=0"], "triplet_gamma=0.0 must be > 0", None),
    "infinite clusters per class": (["sampling", "--set", "clusters_per_class=inf"], "clusters_per_class=inf", None),
    "nan bank momentum": (["sampling", "--set", "bank_momentum=nan"], "bank_momentum=nan", None),
    "infinite MoCo momentum": (["methods", "--set", "encoder_momentum=inf"], "encoder_momentum=inf", None),
    "nan BYOL momentum": (["methods", "--set", "target_momentum=nan"], "target_momentum=nan", None),
    "zero threads": (["sampling", "--set", "threads=0"], "threads=0", None),
    "zero batch": (["sampling", "--set", "batch_size=0"], "batch_size=0", None),
    # image trees, further
    "data root is a file": (["sampling", *IMAGEFOLDER], "imagefolder needs data_root",
                            lambda t: (t / "images").write_text("x")),
    "no test split": (["sampling", *IMAGEFOLDER], "imagefolder needs data_root",
                      lambda t: (t / "images" / "train" / "a").mkdir(parents=True)),
    "one class": (["sampling", *IMAGEFOLDER], "at least 2 classes", lambda t: image_tree(t, classes=("a",), per_class=6)),
    "empty class folder": (["sampling", *IMAGEFOLDER], "holds no images",
                           lambda t: tree_with(t, lambda train: [p.unlink() for p in (train / "b").iterdir()])),
    "train without class folders": (["sampling", *IMAGEFOLDER], "has no class folders", no_class_folders),
    "symlink loop": (["sampling", *IMAGEFOLDER], "through a symbolic link",
                     lambda t: tree_with(t, lambda train: (train / "a" / "loop").symlink_to(train / "a"))),
    "class folder linked into another": (["sampling", *IMAGEFOLDER], "through a symbolic link",
                                         lambda t: tree_with(t, lambda train: (train / "b" / "more").symlink_to(
                                             train / "a"))),
    "image linked under two classes": (["sampling", *IMAGEFOLDER], "is the same file as",
                                       lambda t: tree_with(t, lambda train: (train / "b" / "x.png").symlink_to(
                                           train / "a" / "0.png"))),
    "truncated JPEG with an intact header": (["sampling", *IMAGEFOLDER], "cannot read image",
                                             lambda t: tree_with(t, truncated_jpeg)),
    "image declaring 30000 x 30000 pixels": (["sampling", *IMAGEFOLDER], "over the budget",
                                             lambda t: tree_with(t, lambda train: (train / "a" / "big.png")
                                                                 .write_bytes(declared_size(30000, 30000)))),
    "image over the pixel budget": (["sampling", *IMAGEFOLDER], "declares 9000 x 9000 pixels",
                                    lambda t: tree_with(t, lambda train: (train / "a" / "big.png")
                                                        .write_bytes(declared_size(9000, 9000)))),
    # devices and clusters
    "device=cuda without a GPU": (["sampling", *SYNTHETIC, "--set", "device=cuda"], "no CUDA device", None),
    "a GPU profile without a GPU": (["sampling", *SYNTHETIC, "--scale", "cifar", "--set", "device=auto"],
                                    "no CUDA device", None),
    "unreachable --address": (["sampling", *SYNTHETIC, "--address", "127.0.0.1:1"], "cannot reach the Ray cluster",
                              None),
    "--address not HOST:PORT": (["sampling", *SYNTHETIC, "--address", "somewhere"], "is not HOST:PORT", None),
    # a folder in use
    "output folder in use": (["sampling", *SYNTHETIC], "in use by another study.run (host other-host, pid 4242",
                             held_lock),
    "--resume while the run goes on": (["sampling", *SYNTHETIC, "--resume"], "in use by another study.run",
                                       lambda t: held_lock(t, unfinished_run)),
}


def files_under(root: Path) -> dict:
    """Every file with its content, every folder and link: what a refused command must leave as it was."""
    entries = {}
    for path in root.rglob("*"):  # rglob does not descend into linked folders, so a loop is listed once
        if path.is_symlink():
            entries[path] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[path] = ("folder",)
        else:
            entries[path] = (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
    return entries


def assert_refused(code, captured, words):
    assert code == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, capsys, name):
    args, words, setup = CASES[name]
    if "GPU" in name and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    try:
        if setup:
            setup(tmp_path)
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        defaults = []
        for flag, value in (("--out", tmp_path / "out"), ("--storage", tmp_path / "storage")):
            if flag not in args:
                defaults += [flag, str(value)]
        before = files_under(tmp_path)
        code = study_run.main([*args, *defaults])
        assert_refused(code, capsys.readouterr(), words)
        assert files_under(tmp_path) == before
        assert not ray.is_initialized()
    finally:
        while HELD:
            os.close(HELD.pop())


def results_table(tmp, frame):
    (tmp / "res").mkdir()
    frame.to_parquet(tmp / "res" / "trials.parquet")


def committed_study(tmp, looks: str):
    """results/tiny/sampling holding a table and the given looks.json."""
    folder = tmp / "results" / "tiny" / "sampling"
    folder.mkdir(parents=True)
    SAMPLING_ROWS.to_parquet(folder / "trials.parquet")
    (folder / "looks.json").write_text(looks)


SAMPLING_ROWS = pd.DataFrame({"study": ["sampling"] * 2, "value": ["hard", "random"], "seed": [0, 0],
                              "epoch": [1, 1], "config_hash": ["a", "b"], "knn_top1": [1.0, 2.0],
                              "svm_map": [1.0, 2.0]})

OTHER_TOOLS = {  # name: (main function, arguments, words the error must contain, set-up of the tmp folder)
    "report: corrupt table": (analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"],
                              "cannot read", lambda t: (t / "res").mkdir() or (t / "res" / "trials.parquet")
                              .write_bytes(b"PAR1 not really")),
    "report: empty table": (analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"], "has no rows",
                            lambda t: results_table(t, SAMPLING_ROWS.iloc[:0])),
    "report: foreign table": (analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"],
                              "not a study.run results table",
                              lambda t: results_table(t, pd.DataFrame({"price": [1.0], "item": ["x"]}))),
    "report: another study's table": (analysis_report.main, ["--study", "labels", "--folder", "{tmp}/res"],
                                      "holds results of study sampling, not labels",
                                      lambda t: results_table(t, SAMPLING_ROWS)),
    "report: a corrupt table among the studies": (
        analysis_report.main, ["--results", "{tmp}/results"], "cannot read",
        lambda t: (t / "results" / "tiny" / "sampling").mkdir(parents=True)
        or (t / "results" / "tiny" / "sampling" / "trials.parquet").write_bytes(b"")),
    "bernoulli: m over 10^6": (bernoulli.main, ["--m", "2000000"], "outside 0..1000000", None),
    "bernoulli: negative k": (bernoulli.main, ["--k", "-3"], "--k -3 is negative", None),
    "bernoulli: p over 1": (bernoulli.main, ["--p", "2"], "need 0 <= p <= 1", None),
    "fit: --json-out under a file": (trainers_fit.main, ["--set", "dataset=synthetic", "--json-out",
                                                         "{tmp}/blocker/rows.json"], "cannot write to --json-out",
                                     lambda t: (t / "blocker").write_text("x")),
    "fit: --json-out is a folder": (trainers_fit.main, ["--set", "dataset=synthetic", "--json-out", "{tmp}"],
                                    "is a folder", None),
    "fit: --checkpoint-dir is a file": (trainers_fit.main, ["--set", "dataset=synthetic", "--checkpoint-dir",
                                                            "{tmp}/state"], "cannot write to --checkpoint-dir",
                                        lambda t: (t / "state").write_text("x")),
    "fit: non-finite lr": (trainers_fit.main, ["--set", "lr=inf"], "lr=inf is not a finite number", None),
    "report: a trial x epoch row twice": (
        analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"], "appear more than once",
        lambda t: results_table(t, pd.concat([SAMPLING_ROWS, SAMPLING_ROWS.iloc[[0]]]))),
    "report: an infinite metric": (
        analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"], "knn_top1 is inf for value hard",
        lambda t: results_table(t, SAMPLING_ROWS.assign(knn_top1=[float("inf"), 2.0]))),
    "report: a measured metric that is NaN": (
        analysis_report.main, ["--study", "sampling", "--folder", "{tmp}/res"], "svm_map is nan for value random",
        lambda t: results_table(t, SAMPLING_ROWS.assign(svm_map=[1.0, float("nan")]))),
    "report: another study's looks": (
        analysis_report.main, ["--results", "{tmp}/results"], "records the looks of study labels",
        lambda t: committed_study(t, '{"study": "labels", "max_seeds": 5, "seeds": [3]}')),
    "report: a truncated looks.json": (
        analysis_report.main, ["--results", "{tmp}/results"], "is not a record of sequential looks",
        lambda t: committed_study(t, '{"max_seeds": 5, "se')),
    "report: looks off the schedule": (
        analysis_report.main, ["--results", "{tmp}/results"], "is not a record of sequential looks",
        lambda t: committed_study(t, '{"max_seeds": 5, "seeds": [4]}')),
    "sequential: another study's folder": (
        sequential.main, ["--study", "labels", "--folder", "{tmp}/res", "--max-seeds", "5"],
        "holds results of study sampling, not labels", lambda t: results_table(t, SAMPLING_ROWS)),
    "sequential: an empty folder": (
        sequential.main, ["--study", "sampling", "--folder", "{tmp}", "--max-seeds", "5"], "no results table", None),
    "rehash: a corrupt table": (rehash.main, ["{tmp}/res"], "is unreadable",
                                lambda t: (t / "res").mkdir() or (t / "res" / "trials.parquet").write_bytes(b"PAR1 no")),
    "rehash: a trial record that is not JSON": (
        rehash.main, ["{tmp}/pc"], "is not a trial record",
        lambda t: ((t / "pc" / "trials").mkdir(parents=True), (t / "pc" / "search.csv").write_text("config_hash\n"),
                   (t / "pc" / "trials" / "000000000001.json").write_text('{"config": '))),
    "fit: --floor-cache is a file": (trainers_fit.main, ["--set", "dataset=synthetic", "--floor-cache", "{tmp}/floors"],
                                     "--floor-cache", lambda t: (t / "floors").write_text("x")),
    "fit: a state whose rows are not a list": (
        trainers_fit.main, ["--set", "dataset=synthetic", "--set", "method=truncated-triplet", "--set", "batch_size=64",
                            "--checkpoint-dir", "{tmp}"], "not a trial state",
        lambda t: torch.save({"epoch": 1, "rows": 5}, t / "state.pt")),
    "submit: --address without a scheme": (submit.main, ["--address", "127.0.0.1:8265", "sampling"],
                                           "is not the dashboard's URL", None),
}


@pytest.mark.parametrize("name", list(OTHER_TOOLS))
def test_other_tools_refuse_bad_input_in_one_line(tmp_path, capsys, name):
    main, args, words, setup = OTHER_TOOLS[name]
    if setup:
        setup(tmp_path)
    before = files_under(tmp_path)
    assert_refused(main([a.replace("{tmp}", str(tmp_path)) for a in args]), capsys.readouterr(), words)
    assert files_under(tmp_path) == before


def test_the_catalogue_holds_at_least_70_cases():
    assert len(CASES) + len(OTHER_TOOLS) >= 70


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
