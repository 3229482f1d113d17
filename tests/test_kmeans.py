import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from trainers.kmeans import faiss_available, global_kmeans, nearest_centroid


def blobs(seed=0, per=40, k=4, dim=5):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=generator) * 10
    truth = torch.arange(k).repeat_interleave(per)
    return centres[truth] + 0.1 * torch.randn(k * per, dim, generator=generator), truth


def test_nearest_centroid_matches_cdist():
    generator = torch.Generator().manual_seed(3)
    points, centroids = torch.randn(500, 7, generator=generator), torch.randn(9, 7, generator=generator)
    assert torch.equal(nearest_centroid(points, centroids, chunk=64), torch.cdist(points, centroids).argmin(1))
    usable = torch.ones(9, dtype=torch.bool)
    usable[torch.cdist(points, centroids).argmin(1)[0]] = False
    assert bool((nearest_centroid(points, centroids, usable) != torch.nonzero(~usable)[0]).all())


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=pytest.mark.skipif(
    not faiss_available(), reason="faiss not installed"))])
def test_global_kmeans_recovers_separated_blobs(backend):
    points, truth = blobs()
    labels, centroids = global_kmeans(points, 4, iterations=20, seed=0, backend=backend)
    assert adjusted_rand_score(truth.numpy(), labels.numpy()) == 1.0
    assert torch.equal(labels, torch.cdist(points, centroids).argmin(1))
    for c in range(4):  # a converged Lloyd's fixed point: each centroid is its members' mean
        assert torch.allclose(centroids[c], points[labels == c].mean(0), atol=1e-3)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_for_a_gpu_trial_copies_its_index_to_one_gpu_only(monkeypatch):
    """faiss's Kmeans(gpu=1) means every visible GPU, the other ranks' too; a trial asks for one. A CPU
    build of faiss has no GPUs, so the copy is recorded and skipped here: the clustering must not change."""
    import faiss

    from trainers.kmeans import _faiss_centroids

    copies = []
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index, ngpu=-1, **_: copies.append(ngpu) or index,
                        raising=False)
    points, _ = blobs()
    on_gpu = _faiss_centroids(points, 4, iterations=10, seed=0, threads=1, on_gpu=True)
    assert copies == [1]
    assert torch.equal(on_gpu, _faiss_centroids(points, 4, iterations=10, seed=0, threads=1, on_gpu=False))
    assert copies == [1]


def test_global_kmeans_is_deterministic_per_seed():
    points, _ = blobs(seed=1, k=6)
    first = global_kmeans(points, 8, iterations=10, seed=5, backend="torch")
    second = global_kmeans(points, 8, iterations=10, seed=5, backend="torch")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = global_kmeans(points, 8, iterations=10, seed=6, backend="torch")
    assert not torch.equal(first[1], other[1])  # the seed draws the starts: 8 clusters of 6 blobs end elsewhere


def test_more_clusters_than_points_is_an_error():
    with pytest.raises(ValueError, match="at least"):
        global_kmeans(torch.randn(3, 2), 4, iterations=1, seed=0, backend="torch")


def test_kmeans_plus_plus_draws_each_start_in_proportion_to_its_squared_distance():
    """Three points on a line at 0, 1 and 3: after a first start drawn uniformly, the second is drawn with
    probability d^2 / sum d^2 (from 0: 1/10 and 9/10; from 1: 1/5 and 4/5; from 3: 9/13 and 4/13)."""
    from trainers.kmeans import _kmeans_plus_plus

    points = torch.tensor([[0.0], [1.0], [3.0]])
    expected = {(0, 1): 1 / 30, (0, 2): 9 / 30, (1, 0): 1 / 15, (1, 2): 4 / 15, (2, 0): 9 / 39, (2, 1): 4 / 39}
    draws = 6000
    counts = dict.fromkeys(expected, 0)
    for seed in range(draws):
        starts = _kmeans_plus_plus(points, 2, torch.Generator().manual_seed(seed))
        pair = tuple(int(points[:, 0].eq(value).nonzero()) for value in starts[:, 0])
        counts[pair] += 1  # a repeated start would be a KeyError
    for pair, probability in expected.items():
        spread = (probability * (1 - probability) / draws) ** 0.5
        assert abs(counts[pair] / draws - probability) < 4 * spread, (pair, counts[pair] / draws, probability)
