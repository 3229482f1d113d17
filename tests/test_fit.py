import json
import math
import os

import pytest
import torch

import trainers.fit
import trainers.trial
from trainers import data as datasets
from trainers.config import ConfigError, TrialConfig
from trainers.evaluate import extract, svm_map
from trainers.fit import ConsoleReporter, fit
from trainers.methods.registry import METHODS
from trainers.randomness import RandomStreams

SYNTHETIC = TrialConfig.create(dataset="synthetic", image_size=16, epochs=3, batch_size=64, num_negatives=16,
                        clusters_per_class=2, min_cluster_size=5, negative_sampling="semi-hard", seed=7)
METRICS = ("knn_top1", "svm_map", "linear_top1", "loss", "loss_intra", "loss_inter", "label_nmi", "labels_changed")


def metrics(rows):
    return [[row.get(key) for key in METRICS] for row in rows]


def same(a, b):
    return all((x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b)) and len(a) == len(b)


class Quiet:
    """Keeps nothing and prints nothing."""

    def restore(self, config_hash):
        return None

    def report(self, row, state):
        pass


class StopAfter(ConsoleReporter):
    """Keeps checkpoints like the console reporter, and dies after a given epoch (a crash)."""

    def __init__(self, folder, epoch):
        super().__init__(folder)
        self.epoch = epoch

    def report(self, row, state):
        super().report(row, state)
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_same_config_and_seed_give_identical_metrics():
    first, second = fit(SYNTHETIC), fit(SYNTHETIC)
    assert [r["epoch"] for r in first] == [0, 1, 2, 3]
    for metric in ("knn_top1", "svm_map", "linear_top1"):  # a gain is over the random network, not the last epoch
        assert same([[r[f"{metric}_gain"] for r in first[1:]]], [[r[metric] - first[0][metric] for r in first[1:]]])
    assert same(metrics(first), metrics(second))
    assert not same(metrics(first), metrics(fit(SYNTHETIC.replace(seed=8))))


def assert_resumes_exactly(config, folder):
    """A trial stopped after epoch 1 and resumed from its state gives the uninterrupted run's metrics;
    returns the uninterrupted run's rows."""
    uninterrupted = fit(config)
    with pytest.raises(KeyboardInterrupt):
        fit(config, StopAfter(folder, epoch=1))
    reported = []

    class Recording(ConsoleReporter):
        def report(self, row, state):
            reported.append(row["epoch"])
            return super().report(row, state)

    resumed = fit(config, Recording(str(folder)))
    assert reported == list(range(2, config.epochs + 1))  # went on from the saved epoch, not from the start
    assert same(metrics(resumed), metrics(uninterrupted))
    return uninterrupted


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    assert_resumes_exactly(SYNTHETIC, tmp_path)


def test_a_resume_on_another_device_model_says_so(tmp_path, monkeypatch, capsys):
    """Kernels and GPU random draws differ by device model: a state records where it was saved, and a resume
    elsewhere goes on (a retry may land on another node type) but says that its numbers may differ."""
    monkeypatch.setattr(trainers.trial, "device_model", lambda device: "model A")
    with pytest.raises(KeyboardInterrupt):
        fit(SYNTHETIC, StopAfter(tmp_path, epoch=1))
    capsys.readouterr()
    monkeypatch.setattr(trainers.trial, "device_model", lambda device: "model B")
    rows = fit(SYNTHETIC, ConsoleReporter(str(tmp_path)))
    assert "resuming a state saved on model A on model B" in capsys.readouterr().out
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    again = fit(SYNTHETIC, ConsoleReporter(str(tmp_path)))  # saved on model B now: nothing to say
    assert same(metrics(again), metrics(rows))
    assert "resuming a state saved" not in capsys.readouterr().out


def test_the_device_model_of_a_cpu_is_its_model_name():
    lines = open("/proc/cpuinfo").read().splitlines() if os.path.exists("/proc/cpuinfo") else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    model = trainers.trial.device_model(torch.device("cpu"))
    assert model and (not names or model == names[0])


def recording_steps(monkeypatch) -> tuple[list, list]:
    """(the step index, the loss) of every training step, as Trial.step receives and returns them."""
    steps, losses = [], []
    step = trainers.trial.Trial.step

    def recorded(self, images, labels, indices, index):
        loss, logs = step(self, images, labels, indices, index)
        steps.append(index)
        losses.append(float(loss))
        return loss, logs

    monkeypatch.setattr(trainers.trial.Trial, "step", recorded)
    return steps, losses


def test_each_training_step_gets_the_next_global_index_across_epochs_and_a_resume(tmp_path, monkeypatch):
    """The step index drives the schedule-dependent parts of a method (bank writes, momentum): it counts
    the trial's steps from 0, whichever epoch and process runs them."""
    config = SYNTHETIC.replace(epochs=2)
    per_epoch = len(datasets.load(config).train) // config.batch_size
    steps, _ = recording_steps(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fit(config, StopAfter(tmp_path, epoch=1))
    assert steps == list(range(per_epoch))
    steps.clear()
    fit(config, ConsoleReporter(str(tmp_path)))
    assert steps == list(range(per_epoch, 2 * per_epoch))


def test_an_epochs_loss_is_the_mean_of_its_steps_losses(monkeypatch):
    _, losses = recording_steps(monkeypatch)
    rows = fit(SYNTHETIC.replace(epochs=1))
    assert len(losses) > 1 and rows[1]["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_the_command_writes_its_rows_to_json_out_in_a_folder_it_creates(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "rows.json"
    settings = ["dataset=synthetic", "image_size=16", "epochs=1", "batch_size=64", "num_negatives=16",
                "clusters_per_class=2", "min_cluster_size=5", "seed=7"]
    assert trainers.fit.main([arg for setting in settings for arg in ("--set", setting)] + ["--json-out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["config"]["epochs"] == 1 and written["config"]["seed"] == 7
    assert [row["epoch"] for row in written["rows"]] == [0, 1]
    assert len(capsys.readouterr().out.splitlines()) == 2  # one printed line per epoch


def test_checkpoint_of_another_config_is_refused(tmp_path):
    fit(SYNTHETIC.replace(epochs=1), ConsoleReporter(str(tmp_path)))
    with pytest.raises(ConfigError, match="different config"):
        fit(SYNTHETIC.replace(epochs=1, lr=0.1), ConsoleReporter(str(tmp_path)))


def test_training_improves_features_on_synthetic_data():
    rows = fit(SYNTHETIC.replace(epochs=6, seed=0))
    assert rows[-1]["knn_top1"] > rows[0]["knn_top1"] + 3


def test_intra_only_and_inter_only_log_their_branch():
    intra = fit(SYNTHETIC.replace(epochs=1, loss_lambda=1.0))[-1]
    inter = fit(SYNTHETIC.replace(epochs=1, loss_lambda=0.0))[-1]
    assert "loss_intra" in intra and "loss_inter" not in intra
    assert "loss_inter" in inter and "loss_intra" not in inter
    assert torch.isfinite(torch.tensor([intra["loss"], inter["loss"]])).all()


def test_eval_every_skips_the_measurement_not_the_training():
    every = fit(SYNTHETIC)
    sparse = fit(SYNTHETIC.replace(eval_every=2))
    assert [math.isnan(r["knn_top1"]) for r in sparse] == [False, True, False, False]  # 0, 2 and the last
    assert sparse[1]["eval_time_s"] == 0.0 and all(r["eval_time_s"] > 0 for r in sparse if r["epoch"] != 1)
    assert same(metrics([every[i] for i in (0, 2, 3)]), metrics([sparse[i] for i in (0, 2, 3)]))
    assert [r["loss"] for r in every[1:]] == [r["loss"] for r in sparse[1:]]


def test_trials_share_a_floor_that_equals_their_own(tmp_path, monkeypatch):
    alone = fit(SYNTHETIC.replace(epochs=1, negative_sampling="hard"))
    fit(SYNTHETIC.replace(epochs=1), floor_cache=tmp_path)  # measures the seed's floor
    svm_fits = []
    monkeypatch.setattr(trainers.trial, "svm_map", lambda *args, **keys: svm_fits.append(1) or svm_map(*args, **keys))
    shared = fit(SYNTHETIC.replace(epochs=1, negative_sampling="hard"), floor_cache=tmp_path)
    assert len(svm_fits) == 1  # the last epoch's; the floor was read
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert same(metrics(shared), metrics(alone))
    assert {r["svm_train_size"] for r in shared} == {len(datasets.load(SYNTHETIC).train)}


def tensors_of(state, prefix=""):
    """Every tensor of a nested state dict, by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {path: t for key, value in state.items() for path, t in tensors_of(value, f"{prefix}/{key}").items()}
    return {}


@pytest.fixture
def one_thread():
    """One torch thread, as a tiny trial runs: with two, this machine's first calibration in a process differed
    from later ones in the last bits (1e-7), so no two starts would be equal bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_settings_whose_networks_start_equal_share_one_calibration_and_start_as_they_would_alone(monkeypatch,
                                                                                                 one_thread):
    data = datasets.load(SYNTHETIC)
    starts, calibrations = {}, []
    calibrate = trainers.trial.calibrate_batch_norm
    monkeypatch.setattr(trainers.trial, "calibrate_batch_norm",
                        lambda *args, **keys: calibrations.append(1) or calibrate(*args, **keys))
    trainers.trial.Trial(SYNTHETIC.replace(negative_sampling="hard"), data).start(measure=False, starts=starts)
    shared = trainers.trial.Trial(SYNTHETIC, data)
    shared_row = shared.start(measure=False, starts=starts)
    assert len(calibrations) == 1 and len(starts) == 1  # semi-hard's network is hard's: calibrated once
    alone = trainers.trial.Trial(SYNTHETIC, data)
    alone_row = alone.start(measure=False)
    trainers.trial.Trial(SYNTHETIC.replace(cnn_width=8), data).start(measure=False, starts=starts)
    assert len(calibrations) == 3 and len(starts) == 2  # another width starts from another network
    assert shared_row == alone_row == {}  # measured nothing
    shared_state, alone_state = tensors_of(shared.method.state_dict()), tensors_of(alone.method.state_dict())
    assert shared_state.keys() == alone_state.keys() and any("running_mean" in path for path in shared_state)
    assert all(torch.equal(shared_state[path], alone_state[path]) for path in shared_state)
    images, labels, indices = next(iter(alone.training_batches()))
    shared_batch = next(iter(shared.training_batches()))
    assert torch.equal(shared_batch[2], indices)
    assert torch.equal(shared.step(*shared_batch, step=0)[0], alone.step(images, labels, indices, step=0)[0])


def test_offline_relabelling_hands_its_features_to_the_evaluation():
    config = SYNTHETIC.replace(epochs=1, label_mode="offline")
    data = datasets.load(config)
    torch.manual_seed(0)
    method = METHODS[config.method](config, data, torch.device("cpu"))
    _, embeddings = extract(method.encoder, datasets.evaluation_batches(data.train), config.image_size, data.mean,
                            data.std, torch.device("cpu"))
    method.start(embeddings, RandomStreams.create(0, torch.device("cpu")))
    method.end_epoch(1)
    features, embeddings = method.take_train_extraction()
    expected = extract(method.encoder, datasets.evaluation_batches(data.train), config.image_size, data.mean,
                       data.std, torch.device("cpu"))
    assert torch.equal(features, expected[0]) and torch.equal(embeddings, expected[1])
    assert method.take_train_extraction() is None  # handed over once
    moco_config = config.replace(method="mocov2-interclr", num_negatives=16, clusters_per_class=2, min_cluster_size=5)
    moco = METHODS["mocov2-interclr"](moco_config, data, torch.device("cpu"))
    moco.start(embeddings, RandomStreams.create(0, torch.device("cpu")))
    moco.end_epoch(1)
    assert moco.take_train_extraction() is None  # its bank holds the key encoder's embeddings, not the evaluated one's


def test_resume_with_skipped_evaluations_continues_exactly(tmp_path):
    assert_resumes_exactly(SYNTHETIC.replace(eval_every=2), tmp_path)


class StopAtStart:
    """Keeps the epoch-0 state and stops the trial there."""

    def restore(self, config_hash):
        return None

    def report(self, row, state):
        self.state = state
        raise KeyboardInterrupt


def test_the_initial_bank_holds_what_the_network_computes_in_training():
    """The bank is seeded with the embeddings training would write (un-augmented): batch-norm
    statistics of the data, not PyTorch's placeholder mean 0 and variance 1."""
    from trainers.augment import evaluation_view

    reporter = StopAtStart()
    with pytest.raises(KeyboardInterrupt):
        fit(SYNTHETIC, reporter)
    data = datasets.load(SYNTHETIC)
    method = METHODS[SYNTHETIC.method](SYNTHETIC, data, torch.device("cpu"))
    method.load_state_dict(reporter.state["method"])
    with torch.no_grad():  # the whole training set as one batch: normalised by its own statistics
        training_mode = method.encoder.train()(evaluation_view(datasets.Canvases(data.train.images), 16, data.mean, data.std))
    bank = reporter.state["method"]["bank"]["features"]
    assert torch.nn.functional.cosine_similarity(bank, training_mode).min() > 0.99
