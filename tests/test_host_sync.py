"""No training step waits for the device: during one step of each method (forward, backward,
optimiser step, momentum updates), no tensor is read back to Python."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from trainers import data as datasets, samplers
from trainers.config import TrialConfig
from trainers.evaluate import extract
from trainers.methods.registry import METHODS
from trainers.randomness import RandomStreams

READ_BACKS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"}


class CountReadBacks(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READ_BACKS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_the_counter_sees_each_kind_of_read_back():
    x = torch.ones(3)
    with CountReadBacks() as counter:
        float(x.sum()), bool(x.any()), int(x.sum()), x.tolist(), x.sum().item(), x.cpu()
    assert sorted(counter.seen) == sorted(["__float__", "__bool__", "__int__", "tolist", "item", "cpu"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_training_step_reads_nothing_back(name, monkeypatch):
    # The pools' selection on a CPU goes through numpy (a read-back only in name there); the device path is topk.
    monkeypatch.setattr(samplers, "INTROSELECT_DEVICES", ())
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
    # Step 0: online labels rebalance every 10 steps, the one read-back the README names.
    with CountReadBacks() as counter:
        loss, logs = method.training_step(images, labels, indices, 0, streams)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(0.01)
    assert counter.seen == []
    assert all(torch.is_tensor(value) or isinstance(value, float) for value in logs.values())
