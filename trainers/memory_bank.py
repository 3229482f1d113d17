"""A memory bank: one feature per training sample and, once labelled, one pseudo-label per sample plus
cluster centroids (InterCLR's inter branch labels it; NPIDv2 alone uses only the features).

Online label maintenance (the paper's mini-batch k-means): every write relabels the written
samples to their nearest centroid, and the centroids move with it. Centroids are kept as exact
per-cluster sums and counts (float64), updated incrementally by each write and each re-seeding,
so they always equal the mean of the current members, without rescanning the bank. Every few
iterations clusters that fell below a minimum size are dissolved and re-seeded by splitting the
largest cluster in two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainers.kmeans import nearest_centroid


def rows(table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """table[indices] for non-negative indices of any shape, as one index_select: advanced indexing took 85 us
    against 21 us for the B x K x D negatives of the tiny profile (128 x 16 x 128, one thread, AMD EPYC)."""
    return table.index_select(0, indices.flatten()).view(*indices.shape, *table.shape[1:])


class MemoryBank:
    def __init__(self, features: torch.Tensor, momentum: float):
        """features: N x D, L2-normalised (kept as given, so a restored bank is bit-identical)."""
        self.features = features.float().clone()
        self.momentum = momentum
        self.labels: torch.Tensor | None = None
        self.num_clusters = 0

    def label(self, labels: torch.Tensor, num_clusters: int) -> None:
        """Give every entry a pseudo-label in [0, num_clusters) (the initial or an offline global k-means)."""
        self.labels = labels.long().clone().to(self.features.device)
        self.num_clusters = num_clusters
        self.recount()

    def recount(self) -> None:
        """Cluster sums and counts from scratch."""
        dim = self.features.shape[1]
        self.sums = torch.zeros(self.num_clusters, dim, dtype=torch.float64, device=self.features.device)
        self.sums.index_add_(0, self.labels, self.features.double())
        self.counts = torch.bincount(self.labels, minlength=self.num_clusters)

    @property
    def centroids(self) -> torch.Tensor:
        """k x D means of the current members (zero for an empty cluster)."""
        return (self.sums / self.counts.clamp(min=1)[:, None]).float()

    def assign(self, points: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
        """Nearest non-empty centroid of each point, optionally never cluster `excluded`."""
        usable = self.counts > 0
        if excluded is not None:
            usable[excluded] = False
        return nearest_centroid(points, self.centroids, usable)

    def write(self, indices: torch.Tensor, new_features: torch.Tensor, relabel: bool) -> torch.Tensor:
        """v <- normalize((1 - w) v + w v_new) for the given samples; returns how many labels changed (a
        0-dim tensor on the bank's device: reading it would wait for the device).

        With relabel (online labels), the samples move to their nearest centroid. Centroids follow
        the members' features either way, so they stay exact means. An unlabelled bank only moves features.
        """
        old = self.features[indices]
        updated = F.normalize((1 - self.momentum) * old + self.momentum * new_features.detach().float(), dim=1)
        self.features[indices] = updated
        if self.labels is None:
            return torch.zeros((), dtype=torch.long, device=self.features.device)
        old_labels = self.labels[indices]
        new_labels = self.assign(updated) if relabel else old_labels
        self._tally(old_labels, old, -1)
        self._tally(new_labels, updated, +1)
        self.labels[indices] = new_labels
        return (new_labels != old_labels).sum()

    def _tally(self, labels: torch.Tensor, points: torch.Tensor, sign: int) -> None:
        """Add (+1) or remove (-1) points as members of the given clusters in the sums and counts."""
        self.sums.index_add_(0, labels, points.double(), alpha=sign)
        self.counts.index_add_(0, labels, torch.full_like(labels, sign))

    def _move(self, members: torch.Tensor, clusters: torch.Tensor | int) -> None:
        """Relabel bank entries, moving their features between the clusters' sums and counts."""
        points = self.features[members]
        self._tally(self.labels[members], points, -1)
        self.labels[members] = clusters
        self._tally(self.labels[members], points, +1)

    def rebalance(self, min_size: int) -> int:
        """Dissolve clusters smaller than min_size; each is re-seeded with half of the largest cluster.

        A dissolved cluster's members join their nearest other cluster. The largest cluster is split
        at the median of its members' projection on their principal direction, so both halves keep
        at least min_size members whenever it has 2 * min_size. Returns the number re-seeded.
        """
        reseeded = 0
        for cluster in torch.nonzero(self.counts < min_size).flatten().tolist():
            members = torch.nonzero(self.labels == cluster).flatten()
            if len(members):
                self._move(members, self.assign(self.features[members], excluded=torch.tensor(cluster)))
                self.sums[cluster] = 0.0  # empty now: exactly, not up to the rounding of the subtractions
            largest = int(self.counts.argmax())
            if self.counts[largest] < 2 * min_size:
                break
            donors = torch.nonzero(self.labels == largest).flatten()
            points = self.features[donors]
            centred = points - points.mean(dim=0)
            # The principal direction: the scatter matrix's top eigenvector (half the cost of an SVD of the members).
            direction = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]
            projection = centred @ direction
            upper = projection > projection.median()
            self._move(donors[upper], cluster)
            reseeded += 1
        return reseeded

    def state_dict(self) -> dict:
        # The incremental sums are saved as they are, so a resumed run continues bit for bit.
        state = {"features": self.features, "momentum": self.momentum}
        if self.labels is not None:
            state.update(labels=self.labels, num_clusters=self.num_clusters, sums=self.sums, counts=self.counts)
        return state

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device) -> "MemoryBank":
        """The saved bank, on `device` (a state is loaded on the CPU)."""
        bank = cls(state["features"].to(device), state["momentum"])
        if "labels" in state:
            bank.labels, bank.num_clusters = state["labels"].to(device, copy=True), state["num_clusters"]
            bank.sums, bank.counts = state["sums"].to(device, copy=True), state["counts"].to(device, copy=True)
        return bank
