"""Files from someone else never run code here: a trial state and a CIFAR-10 batch, each crafted to
create a file when unpickled, are refused with one clear error and the file is never made."""

import pickle

import pytest
import torch

from test_data import write_cifar10_batches
from test_fit import SYNTHETIC
from trainers import data as datasets
from trainers.checkpoint import CheckpointError, TrialState
from trainers.config import TrialConfig
from trainers.fit import ConsoleReporter, fit


class CreatesFile:
    """Unpickling this calls open(path, "w"): proof that loading ran code of the file's choosing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class CreatesFileThroughNumpy(CreatesFile):
    """The same proof through numpy.savetxt: a global of the module whose array builders a batch may use."""

    def __reduce__(self):
        import numpy

        return numpy.savetxt, (self.path, [0])


def test_a_trial_state_carrying_code_is_refused_without_running_it(tmp_path, capsys):
    config = SYNTHETIC.replace(epochs=1)
    fit(config, ConsoleReporter(tmp_path / "state"))
    state_file = tmp_path / "state" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    assert TrialState(tmp_path / "state").load(config.config_hash())["epoch"] == 1  # a genuine state loads
    marker = tmp_path / "ran"
    state["rows"][0]["note"] = CreatesFile(marker)
    torch.save(state, state_file)
    with pytest.raises(CheckpointError, match="unreadable"):
        TrialState(tmp_path / "state").load(config.config_hash())
    assert not marker.exists()


@pytest.mark.parametrize("payload, name", [(CreatesFile, "io.open"), (CreatesFileThroughNumpy, "numpy.savetxt")])
def test_a_cifar_batch_carrying_code_is_refused_without_running_it(tmp_path, payload, name):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_batches(folder)
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": payload(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(datasets.DataError, match=f"test_batch.*{name} is not part of a CIFAR-10 batch"):
        datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path), image_size=32))
    assert not marker.exists()
