import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from trainers import baseline
from trainers import data as datasets
from trainers.config import TrialConfig
from trainers.baseline import FloorCache, floor_key
from trainers.methods.registry import METHODS

CONFIG = TrialConfig.create(dataset="synthetic", image_size=16, batch_size=64, num_negatives=16, clusters_per_class=2,
                            min_cluster_size=5, seed=3)


def initial_encoder(config):
    torch.manual_seed(config.seed)
    return METHODS[config.method](config, datasets.load(config), torch.device("cpu")).encoder


def key(config, encoder=None):
    labels = datasets.load(config)
    return floor_key(encoder or initial_encoder(config), config, labels.train_labels(), labels.test_labels())


def test_the_key_follows_the_initial_weights_data_and_evaluation_not_the_method_or_machine():
    base = key(CONFIG)
    # Same seed, other method or inter-branch settings: the same initial encoder, so the same floor.
    assert key(CONFIG.replace(method="npidv2")) == base
    assert key(CONFIG.replace(negative_sampling="hard", loss_lambda=0.5)) == base
    assert key(CONFIG.replace(threads=2, device="cpu")) == base
    # What changes the floor changes the key: a weight, the seed, the data, the evaluation.
    encoder = initial_encoder(CONFIG)
    with torch.no_grad():
        next(encoder.parameters()).view(-1)[0] += 1e-6
    assert key(CONFIG, encoder) != base
    for changes in ({"seed": 4}, {"test_subset": 40}, {"image_size": 14}, {"knn_k": 50}, {"svm_train_size": 300},
                    {"svm_solver": "dual"}, {"probe_epochs": 10}, {"cnn_width": 16}, {"precision": "bf16"},
                    {"knn_temperature": 0.05}, {"load_size": 20}):
        assert key(CONFIG.replace(**changes)) != base, changes


def test_the_key_follows_the_evaluation_protocols_constants(monkeypatch):
    base = key(CONFIG)
    # The probe's momentum (the protocol's last constant) as another version of the code might set it.
    monkeypatch.setattr(baseline, "PROTOCOL", (*baseline.PROTOCOL[:-1], baseline.PROTOCOL[-1] + 0.05))
    assert key(CONFIG) != base


def test_a_floor_is_measured_once_and_read_back_whole(tmp_path):
    cache, calls = FloorCache(tmp_path / "floors"), []

    def measure():
        calls.append(1)
        return {"knn_top1": 61.5, "svm_map": 0.1 + 0.2, "linear_top1": float("nan")}

    first = cache.get("abc", measure)
    second = FloorCache(tmp_path / "floors").get("abc", measure)
    assert len(calls) == 1 and second["svm_map"] == 0.1 + 0.2 and second["knn_top1"] == first["knn_top1"]
    assert sorted(p.name for p in (tmp_path / "floors").iterdir()) == ["abc.json", "abc.lock"]  # no partial file


def test_a_floor_whose_write_broke_off_is_measured_again_never_read_half(tmp_path, monkeypatch):
    real_write = Path.write_text

    def torn_write(path, text, *args, **keys):  # half the text reaches the disk, then it is full
        real_write(path, text[:len(text) // 2], *args, **keys)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn_write)
    with pytest.raises(OSError):
        FloorCache(tmp_path).get("abc", lambda: {"knn_top1": 61.5, "svm_map": 70.25})
    monkeypatch.undo()
    assert not (tmp_path / "abc.json").exists()
    assert FloorCache(tmp_path).get("abc", lambda: {"knn_top1": 62.0}) == {"knn_top1": 62.0}


def slow_measurement(folder, log):
    def measure():
        with open(log, "a") as out:
            out.write("measured\n")
        time.sleep(1.0)  # long enough for the other process to ask meanwhile
        return {"knn_top1": 50.0}

    answer = FloorCache(folder).get("shared", measure)
    Path(f"{log}.{multiprocessing.current_process().pid}").write_text(json.dumps(answer))


def test_concurrent_trials_with_one_floor_measure_it_once(tmp_path):
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=slow_measurement, args=(tmp_path / "floors", str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert log.read_text() == "measured\n"
    answers = [json.loads(p.read_text()) for p in tmp_path.glob("log.*")]
    assert answers == [{"knn_top1": 50.0}] * 2
