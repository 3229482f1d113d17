"""A trial over two ranks (gloo processes on the CPU) computes what the trial computes in one process.

Independent expectation: the one-process trial, which the rest of the suite tests against brute force.
Over ranks only the order of floating-point sums changes (batch-norm statistics summed over the ranks,
gradients summed over them), so losses and parameters after the same steps agree to float32 precision.
"""

import atexit
import copy
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from study.profiles import PROFILES
from tests.image_trees import noise_jpeg_tree
from trainers import data as datasets
from trainers import inter_image
from trainers import trial as trial_module
from trainers.config import ConfigError, TrialConfig
from trainers.distributed import LEADER, Ranks, follow, lead, shard_map
from trainers.fit import ConsoleReporter, Follower, fit
from trainers.memory_bank import MemoryBank
from trainers.methods import truncated_triplet
from trainers.samplers import NEGATIVE_SAMPLING, Clusters, sample_negatives
from trainers.trial import Trial

METHODS = ("npidv2-interclr", "mocov2-interclr", "byol-interclr", "truncated-triplet")


def small_config(method: str, **keys):
    return PROFILES["tiny"].config(method=method, seed=3, train_subset=320, test_subset=200, batch_size=64,
                                   epochs=2, eval_every=1, svm_train_size=320, probe_epochs=3, **keys)


def take_steps(method: str, ranks=None) -> dict:
    """Two training steps from the trial's start: the first step's gradients (summed over the ranks), and
    after it the trained and momentum networks and the method's state (bank, queue, labels); both losses."""
    trial = Trial(small_config(method, data_parallel=ranks.world if ranks else 1), ranks=ranks)
    trial.start(measure=False)
    trial.method.encoder.train()
    batches = iter(trial.training_batches())
    images, labels, indices = next(batches)
    first, _ = trial.step(images, labels, indices, 0)
    result = {"grads": [p.grad.clone() for p in trial.method.parameters()],
              "networks": [module.state_dict() for module in trial.method.network_modules()],
              "state": trial.method.state_dict()}
    result = {key: copy.deepcopy(value) for key, value in result.items()}
    images, labels, indices = next(batches)
    second, _ = trial.step(images, labels, indices, 1)
    if ranks is not None:
        trial.end_epoch(1)
        assert_same_on_every_rank([[m.state_dict() for m in trial.method.network_modules()], trial.method.state_dict()])
    return {**result, "losses": [float(first), float(second)]}


def follow_steps(rank: int, world: int, port: int, methods: tuple) -> None:
    follow(rank, world, port, "cpu", lambda ranks: [take_steps(method, ranks) for method in methods])


def follow_then_abort_at_exit(rank: int, world: int, port: int) -> None:
    atexit.register(os._exit, 134)  # as a library's teardown that aborts after the run (seen here from C++)
    follow(rank, world, port, "cpu", lambda ranks: dist.barrier())


def test_a_follower_whose_teardown_would_abort_after_a_finished_run_does_not_fail_the_trial():
    assert lead(2, "cpu", follow_then_abort_at_exit, (), lambda ranks: dist.barrier() or "finished") == "finished"


def follow_with_a_child(rank: int, world: int, port: int, pid_file: str) -> None:
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,), daemon=True)
    child.start()  # as a loader worker kept between epochs
    Path(pid_file).write_text(str(child.pid))
    follow(rank, world, port, "cpu", lambda ranks: dist.barrier())


def test_a_finished_follower_leaves_no_child_process_behind(tmp_path):
    pid_file = tmp_path / "child.pid"
    lead(2, "cpu", follow_with_a_child, (str(pid_file),), lambda ranks: dist.barrier())
    with pytest.raises(ProcessLookupError):  # ended with the follower, not orphaned for its 120 s
        os.kill(int(pid_file.read_text()), 0)


def steps_over_two_ranks(methods: tuple) -> dict:
    return lead(2, "cpu", follow_steps, (methods,), lambda ranks: {method: take_steps(method, ranks) for method in methods})


def assert_same_on_every_rank(state) -> None:
    """Each rank compares its copy with rank 0's; a follower that differs fails, and rank 0's wait for it raises."""
    for name, tensor in float_tensors(state):
        leaders = tensor.clone()
        dist.broadcast(leaders, LEADER)
        assert torch.equal(leaders, tensor), f"rank {dist.get_rank()} holds another {name} than rank 0"


def float_tensors(state, prefix=""):
    if torch.is_tensor(state):
        if state.is_floating_point():
            yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from float_tensors(value, f"{prefix}.{key}")
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from float_tensors(value, f"{prefix}[{index}]")


@pytest.fixture(scope="module")
def one_and_two_ranks():
    torch.set_num_threads(1)
    return {method: take_steps(method) for method in METHODS}, steps_over_two_ranks(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_steps_over_two_ranks_match_one_process(one_and_two_ranks, method):
    one, two = (results[method] for results in one_and_two_ranks)
    for single, split in zip(one["losses"], two["losses"]):  # the second loss is computed after an update
        # In one process the memory layout alone (NCHW against channels-last) moves the second loss by up
        # to 3e-5 and first-step gradients by up to 8e-3 (the first layers' gradients pass back through
        # three batch norms, whose backward subtracts means); a gradient left unsummed over the ranks, or
        # batch-norm statistics left per rank, is off by 1e-1 or more.
        assert math.isclose(single, split, rel_tol=1e-4), (one["losses"], two["losses"])
    largest = max(grad.norm() for grad in one["grads"])
    checked = 0
    for index, (single, split) in enumerate(zip(one["grads"], two["grads"])):
        # A bias just before a batch norm has gradient 0 in exact arithmetic: its float residue is noise.
        if single.norm() > 1e-4 * largest:
            assert (single - split).norm() <= 1e-2 * single.norm(), (index, (single - split).norm() / single.norm())
            checked += 1
    assert checked >= len(one["grads"]) // 2
    compared = 0
    for (name, single), (_, split) in zip(float_tensors([one["networks"], one["state"]]),
                                          float_tensors([two["networks"], two["state"]])):
        # Sums over the bank (cluster sums) accumulate the float32 residue of many entries, and the step
        # carries the gradients' residue (above) into the weights and the next batch-norm statistics.
        assert torch.allclose(single, split, rtol=1e-3, atol=1e-4), (name, (single - split).abs().max())
        compared += 1
    assert compared > 10
    moved = [name for name, value in float_tensors(one["networks"]) if "running_mean" in name and value.abs().sum() > 0]
    assert moved, "batch norm never ran in training mode: the comparison would not test the synced statistics"


def offline_labels_after_one_step(ranks) -> torch.Tensor:
    """A trial with offline labels over the ranks: its start (k-means), one step and the end of epoch 1 (k-means
    again); returns the bank's labels, after checking that every rank holds rank 0's."""
    trial = Trial(small_config("npidv2-interclr", label_mode="offline", offline_every=1, data_parallel=ranks.world),
                  ranks=ranks)
    trial.start(measure=False)
    images, labels, indices = next(iter(trial.training_batches()))
    trial.step(images, labels, indices, 0)
    trial.end_epoch(1)
    labels = trial.method.inter.bank.labels
    leaders = labels.clone()
    dist.broadcast(leaders, LEADER)
    assert torch.equal(leaders, labels), f"rank {ranks.rank} holds other labels than rank 0"
    return labels


def follow_without_clustering(rank: int, world: int, port: int) -> None:
    """A follower on which k-means fails: the trial must never need it there. (A follower that fails ends the
    test's process at once, as it ends a trial's rank 0: trainers.distributed.Followers.)"""
    def refused(*args, **kwargs):
        raise AssertionError(f"rank {rank} ran k-means")

    inter_image.global_kmeans = refused
    follow(rank, world, port, "cpu", offline_labels_after_one_step)


def test_only_rank_0_clusters_and_every_rank_trains_with_its_labels():
    """The initial and the offline k-means run on rank 0 alone (on GPUs, ranks on other devices would cluster
    with another backend, and wait each other out); the followers take rank 0's labels."""
    torch.set_num_threads(1)
    labels = lead(2, "cpu", follow_without_clustering, (), offline_labels_after_one_step)
    assert len(labels.unique()) > 1  # clustered, not the followers' placeholder


def held_by_every_rank(value) -> list:
    """Each rank's value, on every rank: rank 0 asserts on the followers' too, so that a wrong follower fails
    the test rather than ending its process."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


METRIC_FUNCTIONS = ("knn_top1", "svm_map", "linear_probe_top1")
computed_here: list = []


def evaluated_rows(ranks) -> list:
    """Epoch 0's row with the SVMs and the probe; every rank's row and the metrics it computed itself."""
    trial = Trial(small_config("npidv2-interclr", data_parallel=ranks.world), ranks=ranks)
    row, _ = trial.evaluate_epoch(0, with_svm=True)
    return held_by_every_rank(({key: row[key] for key in ("knn_top1", "svm_map", "linear_top1")}, computed_here))


def follow_counting_metrics(rank: int, world: int, port: int) -> None:
    for name in METRIC_FUNCTIONS:
        def counted(*args, name=name, computed=getattr(trial_module, name), **kwargs):
            computed_here.append(name)
            return computed(*args, **kwargs)

        setattr(trial_module, name, counted)
    follow(rank, world, port, "cpu", evaluated_rows)


def test_only_rank_0_computes_the_metrics_and_every_rank_gets_its_row():
    torch.set_num_threads(1)
    (leaders, _), (followers, computed_by_follower) = lead(2, "cpu", follow_counting_metrics, (), evaluated_rows)
    assert computed_by_follower == []
    assert followers == leaders and not any(math.isnan(value) for value in leaders.values()), (leaders, followers)


def test_rank_0_fits_the_svms_on_the_cpus_of_every_rank(monkeypatch):
    """The other ranks wait for rank 0's row, so their CPUs, which Ray reserved for the trial, are idle."""
    torch.set_num_threads(1)
    given = []

    def recorded(*args, workers, fit=trial_module.svm_map, **kwargs):
        given.append(workers)
        return fit(*args, workers=workers, **kwargs)

    monkeypatch.setattr(trial_module, "svm_map", recorded)
    lead(2, "cpu", follow_counting_metrics, (), evaluated_rows)
    config = small_config("npidv2-interclr")
    assert given == [2 * (config.threads + config.num_workers)]


def test_shares_of_a_batch_are_those_of_tensor_split():
    assert Ranks(0, 3).sizes(7) == [3, 2, 2]
    assert Ranks(0, 2).sizes(5) == [3, 2]
    for world in (1, 2, 3, 4):
        for batch in range(world, 12):
            rows = torch.arange(batch)
            assert Ranks(0, world).sizes(batch) == [len(part) for part in torch.tensor_split(rows, world)]
            shares = [Ranks(rank, world).share(rows) for rank in range(world)]
            assert [len(share) for share in shares] == Ranks(0, world).sizes(batch)
            assert torch.equal(torch.cat(shares), rows)


def collectives(ranks) -> list:
    """What each of two ranks holds after a gather, a resume check and a state broadcast."""
    batch = torch.arange(10.0).view(5, 2).requires_grad_()
    doubled = shard_map(ranks, lambda rows: 2 * rows, batch)
    doubled.sum().backward()
    ranks.check_same(7, "a value")
    try:
        ranks.check_same(ranks.rank, "a value")
        refusal = None
    except RuntimeError as error:
        refusal = str(error)
    state = {"flags": torch.tensor([True, False, True]) ^ bool(ranks.rank),
             "columns": (torch.arange(6.0).view(2, 3) + 10 * ranks.rank).t(),
             "nested": [torch.full((2,), float(ranks.rank))]}
    ranks.broadcast_state(state)
    return held_by_every_rank((doubled.detach(), batch.grad, refusal, state))


def follow_collectives(rank: int, world: int, port: int) -> None:
    follow(rank, world, port, "cpu", collectives)


def test_gather_resume_check_and_state_broadcast_over_two_ranks():
    for rank, (doubled, grad, refusal, state) in enumerate(lead(2, "cpu", follow_collectives, (), collectives)):
        # 5 rows: rank 0 computes rows 0-2, rank 1 rows 3-4 (padded to 3 for all_gather); all get the whole batch,
        # and backward reaches only this rank's rows.
        assert torch.equal(doubled, 2 * torch.arange(10.0).view(5, 2)), rank
        expected = torch.zeros(5, 2)
        expected[[0, 1, 2] if rank == 0 else [3, 4]] = 2.0
        assert torch.equal(grad, expected), rank
        assert refusal is not None and "disagree on a value (0 .. 1)" in refusal, rank
        # gloo sends neither bool nor strided tensors: those take another path, which must still land in place.
        assert torch.equal(state["flags"], torch.tensor([True, False, True])), rank
        assert torch.equal(state["columns"], torch.tensor([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]])), rank
        assert torch.equal(state["nested"][0], torch.zeros(2)), rank


def test_a_follower_reads_the_saved_state_and_saves_none(tmp_path):
    rank_0 = tmp_path / "rank0"
    ConsoleReporter(str(rank_0)).report({"epoch": 0}, {"epoch": 0, "rows": [{"epoch": 0}], "config_hash": "h"})
    follower = Follower(str(rank_0))
    assert follower.restore("h")["rows"] == [{"epoch": 0}]
    alone = tmp_path / "follower"
    Follower(str(alone)).report({"epoch": 1}, {"epoch": 1, "rows": [{"epoch": 0}, {"epoch": 1}], "config_hash": "h"})
    assert not alone.exists() or not any(alone.iterdir())
    follower.report({"epoch": 1}, {"epoch": 1, "rows": [{"epoch": 0}, {"epoch": 1}], "config_hash": "h"})
    assert follower.restore("h")["epoch"] == 0  # rank 0's state, untouched


def test_refuses_more_ranks_than_a_shuffle_bn_group_holds():
    with pytest.raises(ConfigError, match="Shuffle BN group"):
        PROFILES["tiny"].config(method="mocov2", batch_size=8, bn_groups=4, data_parallel=3)


class Interrupted(Exception):
    pass


class StopsAfter(ConsoleReporter):
    """Saves the state like any run, then dies after `epoch`, as a pre-empted node would."""

    def __init__(self, folder, epoch: int):
        super().__init__(folder)
        self.epoch = epoch

    def report(self, row, state):
        super().report(row, state)
        if row["epoch"] == self.epoch:
            raise Interrupted


def computed(rows: list[dict]) -> list[dict]:
    """The rows without what depends on the machine's speed; NaN (an epoch not evaluated) as None, so rows compare."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
             if not k.endswith("_time_s") and k not in ("peak_memory_mb", "hostname")} for row in rows]


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory):
    torch.set_num_threads(1)
    config = small_config("npidv2-interclr")
    one = fit(config, ConsoleReporter())
    two = fit(config.replace(data_parallel=2), ConsoleReporter(str(tmp_path_factory.mktemp("uninterrupted"))))
    return one, two


def test_a_trial_over_two_ranks_resumes_exactly(whole_runs, tmp_path):
    _, uninterrupted = whole_runs
    config = small_config("npidv2-interclr", data_parallel=2)
    with pytest.raises(Interrupted):
        fit(config, StopsAfter(str(tmp_path), epoch=1))
    resumed = fit(config, ConsoleReporter(str(tmp_path)))  # rank 1 reads the state rank 0 saved
    assert computed(resumed) == computed(uninterrupted)
    assert len(resumed) == config.epochs + 1


def test_a_trial_over_two_ranks_matches_one_process(whole_runs):
    """Stated tolerance: the random network's kNN and probe agree to 0.5 points (its features differ in the last
    float32 digits, through the batch-norm calibration summed over ranks), the first epoch's mean loss to
    1e-3 relative. Later epochs drift further apart: k-means and the negatives' top-k are discrete
    choices that a last-digit difference can flip, as between two GPU models."""
    one, two = whole_runs
    for metric in ("knn_top1", "linear_top1"):
        assert abs(one[0][metric] - two[0][metric]) <= 0.5, (metric, one[0][metric], two[0][metric])
    # The SVMs' cross-validated cost on 320 features can flip with the last digits: 1.5 points.
    assert abs(one[0]["svm_map"] - two[0]["svm_map"]) <= 1.5, (one[0]["svm_map"], two[0]["svm_map"])
    assert math.isclose(one[1]["loss"], two[1]["loss"], rel_tol=1e-3), (one[1]["loss"], two[1]["loss"])


def waits_for_rank_0(rank: int, world: int, port: int) -> None:
    follow(rank, world, port, "cpu", lambda ranks: dist.broadcast(torch.zeros(1), LEADER))


def test_a_rank_0_that_fails_stops_its_followers_and_leaves_the_group():
    """Its follower waits in a collective that rank 0 never joins; rank 0's error reaches its caller, and the
    process can start another trial's group (a Ray worker runs the next trial)."""
    def fails(ranks):
        raise ValueError("rank 0 failed")

    with pytest.raises(ValueError, match="rank 0 failed"):
        lead(2, "cpu", waits_for_rank_0, (), fails)
    assert not dist.is_initialized()
    assert lead(2, "cpu", follow_steps, ((),), lambda ranks: ranks.world) == 2


DIES_BEFORE_JOINING = """
import sys
from trainers.distributed import lead

def dies(rank, world, port):
    raise SystemExit(3)

if __name__ == "__main__":
    lead(2, "cpu", dies, (), lambda ranks: print("rank 0 ran without its follower"))
"""


def test_rank_0_stops_at_once_when_a_follower_dies(tmp_path):
    """Without the watch, rank 0 would wait for the dead follower in the group's rendezvous for minutes
    (on NCCL, in any collective until the group's timeout)."""
    script = tmp_path / "dies.py"
    script.write_text(DIES_BEFORE_JOINING)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rank 1 of this trial died (exit code 1); stopping the trial" in done.stdout
    assert "ran without its follower" not in done.stdout
    assert time.monotonic() - started < 60


def image_folders(root: str) -> dict:
    keys = dict(dataset="imagefolder", data_root=root, load_size=20, image_size=16)
    return {"workers": datasets.load(TrialConfig.create(**keys)),
            "encoded": datasets.load(TrialConfig.create(**keys, decode_on_device=True))}


read_here: list = []  # (path kind, dataset index) of every image this process read from its file


def count_reads() -> None:
    for kind, cls in (("workers", datasets.ImageFolderImages), ("encoded", datasets.EncodedImageFolder)):
        def counted(self, index, kind=kind, read=cls.__getitem__):
            read_here.append((kind, index))
            return read(self, index)

        cls.__getitem__ = counted


def loaded_batches(ranks, root: str | None, workers: int = 0) -> list:
    """Both image-folder paths' batches of 5, of the training split shuffled and of the test split in order (6
    images: the last batch holds 1, and rank 1 no image of it), as each rank sees them on its device, read in
    this process (workers 0) or by loader workers; and the images this process read. ranks None: one process."""
    read_here.clear()
    seen = []
    for kind, data in image_folders(root).items():
        for split, shuffle in ((data.train, True), (data.test, False)):
            order = torch.Generator().manual_seed(4)
            for images, labels, indices in datasets.batches(split, 5, shuffle, generator=order, num_workers=workers,
                                                            ranks=ranks):
                whole = images.to("cpu")
                seen.append((kind, whole.pixels, whole.sizes, labels, indices))
    if ranks is None:
        return seen, list(read_here)
    return held_by_every_rank((seen, list(read_here)))


def follow_loading(rank: int, world: int, port: int, root: str, workers: int) -> None:
    count_reads()
    follow(rank, world, port, "cpu", lambda ranks: loaded_batches(ranks, root, workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_each_rank_reads_only_its_share_of_a_batch_and_every_rank_gets_the_whole_batch(tmp_path, monkeypatch,
                                                                                         workers):
    """Independent expectation: one process's loader, which reads every image of a batch; and tensor_split's
    shares of each batch's positions. With loader workers the batches cross from their processes (the reads
    happen there, uncounted)."""
    root = noise_jpeg_tree(tmp_path, train_per_class=6, test_per_class=3)
    monkeypatch.setattr(datasets.ImageFolderImages, "__getitem__", datasets.ImageFolderImages.__getitem__)
    monkeypatch.setattr(datasets.EncodedImageFolder, "__getitem__", datasets.EncodedImageFolder.__getitem__)
    count_reads()
    expected, single_reads = loaded_batches(None, root)
    per_rank = lead(2, "cpu", follow_loading, (root, workers), lambda ranks: loaded_batches(ranks, root, workers))
    # Training drops its partial batch; the test split's last batch holds 1 image, so rank 1 reads none of it.
    assert [len(batch[3]) for batch in expected] == [5, 5, 5, 1] * 2
    assert len(single_reads) == 2 * (10 + 6)
    for rank, (seen, reads) in enumerate(per_rank):
        shares = [(kind, int(index)) for kind, *_, indices in expected
                  for index in torch.tensor_split(indices, 2)[rank]]
        assert reads == (shares if workers == 0 else []), rank
        assert len(seen) == len(expected)
        for got, want in zip(seen, expected):
            assert got[0] == want[0] and all(torch.equal(a, b) for a, b in zip(got[1:], want[1:])), (rank, got[0])


IMAGE_TRIAL_KEYS = {
    # Offline labels: the end of the epoch re-extracts the training set through a loader of its own.
    "npidv2-interclr": dict(num_negatives=4, negative_sampling="random", clusters_per_class=2.0, min_cluster_size=2,
                            label_mode="offline"),
    "truncated-triplet": {},  # its start passes over the training set to count over-clustering events
}


def trial_on_images(ranks, root: str, method: str) -> list:
    """A trial over the ranks on an image folder: its start, one epoch of steps, the end of the epoch and an
    evaluation; its losses, metrics and method state, and the images this rank read from their files."""
    read_here.clear()
    config = TrialConfig.create(method=method, dataset="imagefolder", data_root=root, load_size=20, image_size=16,
                                cnn_width=8, head_hidden=32, embedding_dim=16, batch_size=8, epochs=1,
                                svm_train_size=32, probe_epochs=2, knn_k=5, threads=1, data_parallel=ranks.world,
                                **IMAGE_TRIAL_KEYS[method])
    trial = Trial(config, ranks=ranks)
    start = trial.start()
    losses = [float(trial.step(images, labels, indices, step)[0])
              for step, (images, labels, indices) in enumerate(trial.training_batches())]
    trial.end_epoch(1)
    row, _ = trial.evaluate_epoch(1, with_svm=True)
    metrics = [{key: value for key, value in r.items() if not key.endswith("_time_s")} for r in (start, row)]
    state = [tensor.clone() for _, tensor in float_tensors(trial.method.state_dict())]
    return held_by_every_rank((losses, metrics, state, list(read_here)))


def every_rank_reads_every_image(monkeypatch=None) -> None:
    """The loaders as they were before ranks shared the reading: each rank's read the whole batch. (The truncated
    triplet holds its own name for the loader function.)"""
    whole_batches = datasets.batches

    def batches(*args, ranks=None, **kwargs):
        return whole_batches(*args, **kwargs)

    for module in (datasets, truncated_triplet):
        if monkeypatch is None:
            module.batches = batches
        else:
            monkeypatch.setattr(module, "batches", batches)


def follow_trial_on_images(rank: int, world: int, port: int, root: str, method: str, replicated: bool) -> None:
    count_reads()
    if replicated:
        every_rank_reads_every_image()
    follow(rank, world, port, "cpu", lambda ranks: trial_on_images(ranks, root, method))


@pytest.mark.parametrize("method", IMAGE_TRIAL_KEYS)
def test_a_trial_whose_ranks_share_the_reading_computes_what_ranks_reading_everything_compute(tmp_path, monkeypatch,
                                                                                                method):
    """Bit for bit: the whole batch's canvases reach every rank either way, so nothing downstream can tell. And
    every loader of the trial shares the reading: each rank reads half the images a rank reading everything
    reads (every batch here splits evenly), the two halves together all of them."""
    torch.set_num_threads(1)
    root = noise_jpeg_tree(tmp_path, train_per_class=16, test_per_class=4)
    monkeypatch.setattr(datasets.ImageFolderImages, "__getitem__", datasets.ImageFolderImages.__getitem__)
    count_reads()

    def work(ranks):
        return trial_on_images(ranks, root, method)

    shared = lead(2, "cpu", follow_trial_on_images, (root, method, False), work)
    every_rank_reads_every_image(monkeypatch)
    replicated = lead(2, "cpu", follow_trial_on_images, (root, method, True), work)
    losses, metrics = shared[0][:2]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert metrics[0]["knn_top1"] == metrics[0]["knn_top1"]  # evaluated (not NaN)
    for rank in range(2):
        assert shared[rank][:2] == replicated[rank][:2], rank
        assert all(torch.equal(a, b) for a, b in zip(shared[rank][2], replicated[rank][2])), rank
    every_image = replicated[0][3]
    assert replicated[1][3] == every_image and len(every_image) > 32 * 3  # calibration, start, epoch, evaluation
    assert [len(shared[rank][3]) for rank in range(2)] == [len(every_image) // 2] * 2
    assert Counter(shared[0][3]) + Counter(shared[1][3]) == Counter(every_image)


def exactly_ranked_sampling() -> tuple:
    """A bank of 400 and 11 queries (bank entries 0-10) whose dot products are exact in float32 whatever the
    order of the sums (multiples of 1/64 in 8 dimensions), so every rank ranks the bank as one process does to the
    last bit; 6 clusters. 11 queries: rank 0 samples for 6, rank 1 for 5."""
    generator = torch.Generator().manual_seed(5)
    bank = (torch.randn(400, 8, generator=generator) * 16).round() / 64
    labels = torch.randint(0, 6, (400,), generator=generator)
    return bank, labels, bank[:11].clone(), labels[:11].clone()


sampled_rows: list = []  # how many queries each call of the branch's sampler had, in this process


def count_sampled_rows() -> None:
    def counted(query, *args, sample=inter_image.sample_negatives, **kwargs):
        sampled_rows.append(len(query))
        return sample(query, *args, **kwargs)

    inter_image.sample_negatives = counted


def negatives_of_each_strategy(ranks) -> dict:
    """Per strategy: the 11 queries' negatives (one process: sample_negatives; over ranks: the branch), and the
    generator's next draw after them; and, over ranks, how many queries each rank's sampler had."""
    bank, labels, query, query_clusters = exactly_ranked_sampling()
    sampled_rows.clear()
    drawn = {}
    for strategy in NEGATIVE_SAMPLING:
        settings = small_config("npidv2-interclr", negative_sampling=strategy, num_negatives=4).settings
        generator = torch.Generator().manual_seed(9)
        clusters = Clusters(labels, 6)
        if ranks is None:
            negatives = sample_negatives(query, bank, clusters, query_clusters, 4, strategy, settings.pool_fraction,
                                         generator)
        else:
            memory = MemoryBank(bank.clone(), settings.bank_momentum)
            branch = inter_image.InterImageBranch(settings, memory, 6, seed=0, threads=1, truth=labels, ranks=ranks)
            negatives = branch.negatives(query, query_clusters, clusters, generator)
        drawn[strategy] = (negatives, torch.rand(3, generator=generator))
    return drawn if ranks is None else held_by_every_rank((drawn, list(sampled_rows)))


def follow_sampling(rank: int, world: int, port: int) -> None:
    count_sampled_rows()
    follow(rank, world, port, "cpu", negatives_of_each_strategy)


def test_ranks_sampling_their_shares_of_the_queries_draw_what_one_process_draws(monkeypatch):
    """Independent expectation: sample_negatives on the whole batch in one process, draws bit for bit and the
    generator's state after them (its next numbers); and each rank's sampler saw its share of the queries only."""
    one = negatives_of_each_strategy(None)
    monkeypatch.setattr(inter_image, "sample_negatives", inter_image.sample_negatives)
    count_sampled_rows()
    per_rank = lead(2, "cpu", follow_sampling, (), negatives_of_each_strategy)
    for rank, (drawn, rows) in enumerate(per_rank):
        assert rows == [(6, 5)[rank]] * len(NEGATIVE_SAMPLING)  # 11 queries: 6 and 5
        for strategy, (negatives, after) in drawn.items():
            assert negatives.shape == (11, 4)
            assert torch.equal(negatives, one[strategy][0]), (rank, strategy)
            assert torch.equal(after, one[strategy][1]), (rank, strategy)


def test_a_pool_smaller_than_k_in_another_ranks_share_fails_on_this_rank_too():
    """The pool check covers the whole batch on every rank, so rank 0 names the cause (it fails before any
    collective, so no process group is needed here)."""
    bank, labels, query, _ = exactly_ranked_sampling()
    labels = torch.where(torch.arange(400) < 390, 0, 1 + torch.arange(400) % 5)  # cluster 0 holds 390 entries
    query_clusters = torch.tensor([1, 2, 3, 4, 5, 1, 0, 0, 0, 0, 0])  # cluster 0's queries: rank 1's rows 6-10
    settings = small_config("npidv2-interclr", negative_sampling="semi-hard", num_negatives=4).settings
    branch = inter_image.InterImageBranch(settings, MemoryBank(bank, settings.bank_momentum), 6, seed=0, threads=1,
                                          truth=labels, ranks=Ranks(0, 2))
    with pytest.raises(RuntimeError, match="semi-hard pool holds fewer than num_negatives=4"):
        branch.negatives(query, query_clusters, Clusters(labels, 6), torch.Generator().manual_seed(0))


def test_the_split_sampling_measure_reports_each_ranks_time_and_one_process_draws(capsys):
    from study.measure import split_sampling

    assert split_sampling.main(["--bank", "1000", "--batch", "9", "--negatives", "4", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  one process, the whole batch: ")
    assert [line.split(":")[0] for line in lines[2:]] == [f"  rank {rank} of 2, its share and the gather"
                                                          for rank in range(2)]
    assert all(line.endswith(", the same negatives") for line in lines[2:])
    assert split_sampling.main(["--ranks", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
