"""Common random numbers: trials that share a seed see the same data and views, whatever their factor."""

import torch

from test_fit import Quiet
from trainers import augment
from trainers.config import TrialConfig
from trainers.fit import fit
from trainers.methods import npidv2
from trainers.randomness import RandomStreams, stream_seed

ARM = TrialConfig.create(dataset="synthetic", image_size=16, epochs=1, batch_size=64, num_negatives=16,
                         clusters_per_class=2, min_cluster_size=5, seed=3, knn_k=20)


def views_and_batches(config, monkeypatch):
    """Every augmented view, every batch's indices and every integer draw of the intra step (its negatives,
    among others) one epoch of `config` produced, in order."""
    seen = {"views": [], "indices": [], "intra_draws": []}
    in_intra_step = []
    original_randint = torch.randint

    def recording_randint(*args, **kwargs):
        drawn = original_randint(*args, **kwargs)
        if in_intra_step:
            seen["intra_draws"].append(drawn.clone())
        return drawn

    def recording_view(images, *args, **kwargs):
        view = augment.training_view(images, *args, **kwargs)
        seen["views"].append(view.clone())
        return view

    original_step = npidv2.NPIDv2.intra_step

    def recording_step(self, images, indices, *args, **kwargs):
        seen["indices"].append(indices.clone())
        in_intra_step.append(True)
        try:
            return original_step(self, images, indices, *args, **kwargs)
        finally:
            in_intra_step.pop()

    monkeypatch.setattr(torch, "randint", recording_randint)
    monkeypatch.setattr(npidv2, "training_view", recording_view)
    monkeypatch.setattr(npidv2.NPIDv2, "intra_step", recording_step)
    fit(config, Quiet())
    monkeypatch.undo()
    return seen


def identical(first, second):
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second))


def test_arms_with_one_seed_see_the_same_batches_and_views_at_every_step(monkeypatch):
    hard = views_and_batches(ARM.replace(negative_sampling="hard"), monkeypatch)
    random = views_and_batches(ARM.replace(negative_sampling="random"), monkeypatch)
    intra_only = views_and_batches(ARM.replace(loss_lambda=1.0), monkeypatch)  # draws no inter samples at all
    assert len(hard["views"]) == 600 // 64  # one view per step of the epoch over the 600 synthetic images
    assert len(hard["intra_draws"]) >= len(hard["views"])  # at least the intra negatives of every step
    for other in (random, intra_only):
        assert identical(hard["indices"], other["indices"])
        assert identical(hard["views"], other["views"])
        assert identical(hard["intra_draws"], other["intra_draws"])  # random's inter keys leave them alone


def test_another_seed_sees_other_views(monkeypatch):
    first = views_and_batches(ARM, monkeypatch)
    second = views_and_batches(ARM.replace(seed=4), monkeypatch)
    assert not torch.equal(first["views"][0], second["views"][0])
    assert not torch.equal(first["indices"][0], second["indices"][0])


def test_streams_are_distinct_and_fixed_by_the_seed():
    names = ("order", "views", "intra_negatives", "inter_negatives", "inter_positives", "shuffle_bn")
    seeds = {stream_seed(5, name) for name in names} | {stream_seed(6, name) for name in names}
    assert len(seeds) == 2 * len(names) and all(0 <= s < 2 ** 63 for s in seeds)
    draws = [torch.rand(4, generator=getattr(RandomStreams.create(5, torch.device("cpu")), name)) for name in names]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])
    again = RandomStreams.create(5, torch.device("cpu"))
    assert torch.equal(torch.rand(4, generator=again.views), draws[1])


def test_a_saved_stream_state_continues_where_it_stopped():
    streams = RandomStreams.create(1, torch.device("cpu"))
    torch.rand(3, generator=streams.inter_negatives)
    saved = streams.get_state()
    expected = torch.rand(5, generator=streams.inter_negatives)
    restored = RandomStreams.create(9, torch.device("cpu"))
    restored.set_state(saved)
    assert torch.equal(torch.rand(5, generator=restored.inter_negatives), expected)
