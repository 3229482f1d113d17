"""Global k-means over a whole feature set: faiss when it is installed (on the GPU for a GPU trial, when
faiss was built with GPU support), else a torch implementation on the features' device.

Both are Lloyd's algorithm on Euclidean distance, with empty clusters re-seeded by splitting the
largest one. faiss starts from k random points; the torch path uses k-means++ seeding, which avoids
the poor local optima random starts fall into on small problems. The torch path runs on whatever device the
features are on, so trials run and profile on a GPU without faiss.
"""

from __future__ import annotations

import numpy as np
import torch


KMEANS_BACKENDS = ("auto", "faiss", "torch")  # auto: faiss when it imports, else torch


def faiss_gpus() -> int:
    """How many GPUs faiss can use (0 for a CPU-only faiss build)."""
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor, usable: torch.Tensor | None = None,
                     chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) for every point; `usable` masks out centroids."""
    squared_norms = (centroids * centroids).sum(dim=1)
    if usable is not None:
        squared_norms = squared_norms.masked_fill(~usable, float("inf"))
    labels = [(squared_norms[None, :] - 2 * part @ centroids.T).argmin(dim=1) for part in points.split(chunk)]
    return torch.cat(labels)


def global_kmeans(points: torch.Tensor, k: int, iterations: int, seed: int, backend: str = "auto",
                  threads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels N, centroids k x D) of k-means on N x D points; same seed, same result."""
    if k > len(points):
        raise ValueError(f"k-means with {k} clusters needs at least {k} points, got {len(points)}")
    # faiss on the GPU clusters on the first visible GPU; a process on another GPU uses the torch implementation
    # on its own. (Over a trial's ranks only rank 0 clusters: trainers.inter_image.)
    has_faiss = faiss_available()
    on_gpu = points.is_cuda and has_faiss and faiss_gpus() > 0
    if backend == "auto":
        backend = "faiss" if has_faiss and (not points.is_cuda or (on_gpu and points.device.index in (None, 0))) \
            else "torch"
    if backend == "faiss":
        centroids = _faiss_centroids(points, k, iterations, seed, threads, on_gpu)
    else:
        centroids = _torch_centroids(points, k, iterations, seed)
    return nearest_centroid(points, centroids), centroids


def _faiss_centroids(points: torch.Tensor, k: int, iterations: int, seed: int, threads: int,
                     on_gpu: bool) -> torch.Tensor:
    """`on_gpu`: search the centroids on the first visible GPU (the trial's; faiss needs a GPU build)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    array = np.ascontiguousarray(points.detach().float().cpu().numpy())
    # Use every point (faiss subsamples to 256 per centroid by default) and stay quiet on small sets.
    # On a GPU trial, faiss clusters on the GPU (the features still pass through host memory once).
    kmeans = faiss.Kmeans(array.shape[1], k, niter=iterations, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=len(array))
    if on_gpu:
        # Not Kmeans(gpu=1): faiss reads 1 as True, "every visible GPU", and would copy the index onto the
        # GPUs of the trial's other ranks. Kmeans.train searches whatever index it holds.
        kmeans.index = faiss.index_cpu_to_all_gpus(kmeans.index, ngpu=1)
    kmeans.train(array)
    return torch.from_numpy(kmeans.centroids).to(points.device)


def _torch_centroids(points: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    centroids = _kmeans_plus_plus(points.float(), k, torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        labels = nearest_centroid(points, centroids)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points.float())
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        for empty in torch.nonzero(~filled).flatten().tolist():
            # faiss's rule: move the empty centroid next to the largest cluster's, splitting it.
            largest = int(counts.argmax())
            centroids[empty] = centroids[largest] * (1 + 1e-4)
            centroids[largest] = centroids[largest] * (1 - 1e-4)
            counts[largest] = counts[largest] // 2
            counts[empty] = counts[largest]
    return centroids


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Each next start is a point drawn with probability proportional to its squared distance to the
    nearest start so far (Arthur and Vassilvitskii, 2007).

    The draw stays on the points' device: a uniform number from the (CPU) generator is placed in the
    cumulative distances by a search, so choosing a start never waits for the device (on a GPU the
    read-back per start was most of the seeding's time). Where every distance is zero, a uniformly
    drawn point stands in."""
    n, device = len(points), points.device
    uniforms = torch.rand(k, generator=generator, dtype=torch.float64).to(device)
    uniform_picks = torch.randint(n, (k,), generator=generator).to(device)
    # A start is taken by index_select with a 1-element index: indexing by a 0-dim tensor reads it to the host.
    chosen = [uniform_picks[:1]]
    closest = ((points - points.index_select(0, chosen[0])) ** 2).sum(dim=1)
    for i in range(1, k):
        cumulative = torch.cumsum(closest.double(), dim=0)
        total = cumulative[-1]
        drawn = torch.searchsorted(cumulative, (uniforms[i] * total).unsqueeze(0), right=True).clamp(max=n - 1)
        pick = torch.where(total > 0, drawn, uniform_picks[i:i + 1])
        chosen.append(pick)
        closest = torch.minimum(closest, ((points - points.index_select(0, pick)) ** 2).sum(dim=1))
    return points[torch.cat(chosen)].clone()
