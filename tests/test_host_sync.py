"""No training step waits for the device: during one step of each method (forward, backward,
optimiser step, momentum updates), no tensor is read back to Python, and no call is made that waits
for a GPU without reading anything back (host data copied to the device, a result whose size depends
on the data)."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from trainers import data as datasets, kmeans, samplers
from trainers.config import TrialConfig
from trainers.evaluate import extract
from trainers.methods.registry import METHODS
from trainers.randomness import RandomStreams

READ_BACKS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"}
# On a GPU these wait for the device too: torch.tensor copies host data in and waits for the copy, and the
# others learn their result's size from the device.
WAITS_ON_A_GPU = {"tensor", "as_tensor", "bincount", "nonzero", "argwhere", "masked_select", "unique",
                  "unique_consecutive"}
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}  # with a boolean mask, they wait too


class CountReadBacks(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        if name in READ_BACKS or name in WAITS_ON_A_GPU or (name in INDEXING and boolean_index(args)) or (
                name == "repeat_interleave" and tensor_repeats(args, kwargs)):
            self.seen.append(name)
        return func(*args, **kwargs)


class CountScalarReads(TorchDispatchMode):
    """Below Python: every read of a tensor's value into C++ (aten::_local_scalar_dense), which the function
    counter misses where torch makes it itself (indexing by a 0-dim tensor reads the index)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def boolean_index(args: tuple) -> bool:
    index = args[1] if len(args) > 1 else ()
    parts = index if isinstance(index, (tuple, list)) else (index,)
    return any(torch.is_tensor(part) and part.dtype == torch.bool for part in parts)


def tensor_repeats(args: tuple, kwargs: dict) -> bool:
    """repeat_interleave by a tensor of counts learns its size from the device; by an int, it expands."""
    repeats = kwargs.get("repeats", args[1] if len(args) > 1 else args[0])
    return torch.is_tensor(repeats) and kwargs.get("output_size") is None


def test_the_counter_sees_each_kind_of_read_back():
    x = torch.ones(3)
    with CountReadBacks() as counter:
        float(x.sum()), bool(x.any()), int(x.sum()), x.tolist(), x.sum().item(), x.cpu()
        torch.tensor([1.0]), torch.bincount(x.long()), x[x > 0], x[torch.tensor(1)], x[:, None][x > 0, 0]
        x[x > 0] = 2.0
        x.repeat_interleave(2), x.repeat_interleave(torch.full((3,), 2)), x.repeat_interleave(x.long(), output_size=6)
    with CountScalarReads() as scalars:
        x[torch.tensor(1)], x.sum().item()
    assert scalars.count == 2
    assert sorted(counter.seen) == sorted(["__float__", "__bool__", "__int__", "tolist", "item", "cpu", "tensor",
                                           "tensor", "bincount", "__getitem__", "__getitem__", "__setitem__",
                                           "repeat_interleave"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_training_step_reads_nothing_back(name, monkeypatch):
    # The pools' selection on a CPU goes through numpy (a read-back only in name there); the device path is topk.
    monkeypatch.setattr(samplers, "NUMPY_DEVICES", ())
    own = TrialConfig.keys_of(name)
    extra = {"num_negatives": 16, "clusters_per_class": 2, "min_cluster_size": 5, "queue_size": 64}
    config = TrialConfig.create(method=name, dataset="synthetic", image_size=16, batch_size=32, seed=0,
                                **{k: v for k, v in extra.items() if k in own})
    data = datasets.synthetic(seed=0)
    device = torch.device("cpu")
    streams = RandomStreams.create(0, device)
    method = METHODS[name](config, data, device)
    _, embeddings = extract(method.encoder, datasets.evaluation_batches(data.train), config.image_size, data.mean,
                            data.std, device)
    method.start(embeddings, streams)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.03, momentum=0.9)
    images, labels, indices = next(iter(datasets.batches(data.train, 32, shuffle=True,
                                                         generator=torch.Generator().manual_seed(0))))

    def step(number: int) -> dict:
        loss, logs = method.training_step(images, labels, indices, number, streams)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(0.01 * (number + 1))
        return logs

    step(0)  # the first step copies the augmentations' constants to the device, once per process
    # Step 1: online labels rebalance every 10 steps, the one read-back the README names.
    with CountReadBacks() as counter, CountScalarReads() as scalars:
        logs = step(1)
    assert counter.seen == [] and scalars.count == 0
    assert all(torch.is_tensor(value) or isinstance(value, float) for value in logs.values())


def test_kmeans_plus_plus_seeding_reads_nothing_back():
    """On a GPU a read per start would wait for the device k times (10,000 at the imagenet profile)."""
    points = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    with CountReadBacks() as counter, CountScalarReads() as scalars:
        kmeans._kmeans_plus_plus(points, 12, torch.Generator().manual_seed(0))
    assert counter.seen == [] and scalars.count == 0


def test_the_triplets_epoch_0_pass_reads_back_once_not_per_batch():
    """Its over-clustering counts are summed on the device: the same reads for 4 batches as for 8."""
    data = datasets.synthetic(seed=0)
    reads = []
    for batch_size in (64, 32):
        config = TrialConfig.create(method="truncated-triplet", dataset="synthetic", image_size=16,
                                    batch_size=batch_size, seed=0)
        device = torch.device("cpu")
        method = METHODS["truncated-triplet"](config, data, device)
        with CountReadBacks() as counter, CountScalarReads() as scalars:
            method.start(torch.zeros(0), RandomStreams.create(0, device))
        # The loader's collation makes tensors of host data (as_tensor) for every batch: not a read-back.
        reads.append(([name for name in counter.seen if name in READ_BACKS], scalars.count))
    assert len(data.train) // 64 >= 4 and reads[0] == reads[1], reads
