"""InterCLR's inter-image branch as one part that any base method attaches to a bank of features.

The branch keeps a pseudo-label per bank entry (global k-means at the start, then online
mini-batch k-means or offline global k-means), and per batch contrasts each query with
  positive: a random other member of its cluster,
  negatives: K entries of other clusters from the configured sampler,
by MarginNCE with the inter margin. NPIDv2 lends the branch its own bank (written with momentum
w = 0.5); for MoCov2 and BYOL, InterCLR (trainers.methods.interclr) gives it a bank of their
momentum-encoder / target features, written with w = 1 (replaced), as the paper's section 5.1 says.
BYOL-InterCLR's branch samples no negatives and has no margin: "we only sample the positive pair
after clustering and adopt the same loss in place of the MarginNCE loss" (section 5.1), so its
settings are ClusteringSettings alone and its loss is BYOL's 2 - 2 cos against the positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from trainers.distributed import Ranks
from trainers.errors import ConfigError
from trainers.kmeans import KMEANS_BACKENDS, global_kmeans
from trainers.losses import cosine, cosine_many, margin_nce
from trainers.memory_bank import MemoryBank, rows
from trainers.randomness import RandomStreams
from trainers.samplers import (
    NEGATIVE_SAMPLING,
    Clusters,
    assert_pools_hold,
    pool_size,
    same_cluster_positives,
    sample_negatives,
)
from trainers.settings import MethodSettings, check_margin, check_temperature

LABEL_MODES = ("online", "offline")


@dataclass(frozen=True)
class ClusteringSettings(MethodSettings):
    """The keys of the branch's pseudo-labels and of its weight; defaults are the paper's final recipe.
    BYOL-InterCLR's branch has these alone: it samples no negatives and has no margin (section 5.1)."""
    loss_lambda: float = 0.75  # lambda * L_intra + (1 - lambda) * L_inter; 1 = the base method alone
    bank_momentum: float = 1.0  # w in v <- normalize((1 - w) v + w v_new)
    clusters_per_class: float = 10.0  # pseudo-label clusters as a multiple of the class count
    label_mode: str = "online"  # online: mini-batch k-means every iteration; offline: global k-means
    offline_every: int = 1  # offline: re-extract all features and rerun k-means every this many epochs
    kmeans_iters: int = 20
    kmeans_backend: str = "auto"  # auto: faiss when it imports, else the torch implementation
    rebalance_every: int = 10  # iterations between dissolving clusters smaller than the minimum
    min_cluster_size: int = 20

    def num_clusters(self, num_classes: int) -> int:
        return max(2, round(self.clusters_per_class * num_classes))

    def check(self, trial) -> None:
        super().check(trial)
        for key, allowed in (("label_mode", LABEL_MODES), ("kmeans_backend", KMEANS_BACKENDS)):
            _require(getattr(self, key) in allowed, f"{key}={getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("kmeans_iters", "rebalance_every", "offline_every"):
            _require(getattr(self, key) >= 1, f"{key}={getattr(self, key)} must be >= 1")
        _require(self.min_cluster_size >= 2, f"min_cluster_size={self.min_cluster_size} must be >= 2")
        _require(0.0 <= self.loss_lambda <= 1.0, f"loss_lambda={self.loss_lambda} must be in [0, 1] (1 = intra only)")
        _require(0.0 < self.bank_momentum <= 1.0, f"bank_momentum={self.bank_momentum} must be in (0, 1]")
        _require(self.clusters_per_class > 0, f"clusters_per_class={self.clusters_per_class} must be > 0")

    def check_against_data(self, trial, train_size: int, num_classes: int) -> None:
        super().check_against_data(trial, train_size, num_classes)
        clusters = self.num_clusters(num_classes)
        if clusters > train_size:
            raise ConfigError(f"{clusters} clusters (clusters_per_class={self.clusters_per_class} x {num_classes} "
                              f"classes) exceed the {train_size} training samples; lower clusters_per_class")


@dataclass(frozen=True)
class InterBranchSettings(ClusteringSettings):
    """The branch of NPIDv2- and MoCov2-InterCLR: the pseudo-label keys plus MarginNCE over sampled negatives.
    Defaults are the paper's final recipe, except K (16,384 there), which profiles and studies set relative
    to the bank size."""
    temperature: float = 0.2  # tau of both branches (MoCo v2's; NPIDv2 uses 0.1)
    inter_margin: float = -0.5
    negative_sampling: str = "semi-hard"
    pool_fraction: float = 0.1  # semi-hard / semi-easy pools: this fraction of eligible entries
    num_negatives: int = 4096  # K

    def check(self, trial) -> None:
        super().check(trial)
        _require(self.negative_sampling in NEGATIVE_SAMPLING,
                 f"negative_sampling={self.negative_sampling!r} is not one of {', '.join(NEGATIVE_SAMPLING)}")
        _require(self.num_negatives >= 1, f"num_negatives={self.num_negatives} must be >= 1")
        _require(0.0 < self.pool_fraction <= 1.0,
                 f"pool_fraction={self.pool_fraction} must be in (0, 1]; the paper uses 0.1")
        check_temperature("temperature", self.temperature)
        check_margin("inter_margin", self.inter_margin)

    def check_against_data(self, trial, train_size: int, num_classes: int) -> None:
        """Eligible inter negatives are the bank entries outside the query's cluster; with balanced
        clusters that is train_size * (1 - 1/clusters), and the pools are a fraction of it."""
        super().check_against_data(trial, train_size, num_classes)
        if self.loss_lambda == 1.0:
            return
        clusters = self.num_clusters(num_classes)
        eligible = train_size - math.ceil(train_size / clusters)
        pool = int(pool_size(torch.tensor([eligible]), self.negative_sampling, self.num_negatives,
                             self.pool_fraction)[0])
        if self.num_negatives > min(pool, eligible):
            raise ConfigError(f"num_negatives={self.num_negatives} exceeds the ~{min(pool, eligible)} bank entries a "
                              f"query can draw from ({self.negative_sampling}, pool_fraction={self.pool_fraction}, "
                              f"{train_size} samples, {clusters} clusters); lower num_negatives or raise pool_fraction")

    def loss_at_chance(self) -> float:
        """The inter MarginNCE of a branch that tells no candidate apart: with every cosine equal,
        -log(e^{(c - m)/tau} / (e^{(c - m)/tau} + K e^{c/tau})) = log(1 + K e^{m/tau})."""
        return math.log1p(self.num_negatives * math.exp(self.inter_margin / self.temperature))


# BYOL's 2 - 2 cos between unrelated unit vectors: their cosine averages 0.
REGRESSION_LOSS_AT_CHANCE = 2.0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class InterImageBranch:
    """truth: the N true classes of the bank's entries, used only for the health signals (which share
    of a query's positives and negatives has its class), never by the loss. ranks: this process's place in
    a trial over several (trainers.distributed), else None. Ranks other than rank 0 leave global k-means to
    rank 0 and take its labels when the trial synchronises them (trainers.trial.Trial.synchronise, right
    after the start and after every epoch); each rank samples the negatives of its share of the queries."""

    def __init__(self, settings: ClusteringSettings, bank: MemoryBank, num_clusters: int, seed: int,
                 threads: int, truth: torch.Tensor, ranks: Ranks | None = None):
        self.settings, self.bank, self.num_clusters = settings, bank, num_clusters
        self.seed, self.threads, self.truth, self.ranks = seed, threads, truth, ranks
        self.leader = ranks is None or ranks.leader
        self.samples_negatives = isinstance(settings, InterBranchSettings)  # else BYOL-InterCLR's regression
        self.loss_at_chance = settings.loss_at_chance() if self.samples_negatives else REGRESSION_LOSS_AT_CHANCE

    def start(self) -> None:
        """Label the bank by global k-means over its features (the paper's initialisation); a follower rank
        holds placeholder labels of the same shape until rank 0's arrive."""
        if not self.leader:
            self.bank.label(torch.zeros(len(self.bank.features), dtype=torch.long), self.num_clusters)
            return
        self.bank.label(self.global_labels(self.bank.features, self.seed), self.num_clusters)
        self.bank.rebalance(self.settings.min_cluster_size)
        self.check_pools()

    def check_pools(self, after: str | None = None) -> None:
        """Refuse K when a query of the largest cluster would draw from a pool smaller than K. The launch
        check (check_against_data) knows only the data and assumes balanced clusters; this reads the
        clusters k-means made (after None: before training), and those of every later relabelling: online
        labels' at every rebalance, offline labels' at every global k-means (`after` says which, for the
        message); each waits for the device anyway. Between two rebalances the sampler's own assertion is
        the guard, but on a GPU it fails as a bare device-side assert."""
        s = self.settings
        if s.loss_lambda == 1.0 or not self.samples_negatives:
            return
        largest = int(self.bank.counts.max())
        eligible = len(self.bank.labels) - largest
        pool = min(eligible, int(pool_size(torch.tensor([eligible]), s.negative_sampling, s.num_negatives,
                                           s.pool_fraction)[0]))
        if s.num_negatives > pool:
            initial = "initial " if after is None else ""
            cause = "" if after is None else (f" after {after}, which put that much of the bank in one cluster (have "
                                              f"the features collapsed?)")
            raise ConfigError(f"num_negatives={s.num_negatives} exceeds the {pool} bank entries a query of the "
                              f"largest {initial}cluster ({largest} of {len(self.bank.labels)} samples) can draw "
                              f"from ({s.negative_sampling}, pool_fraction={s.pool_fraction}){cause}; lower "
                              f"num_negatives or raise pool_fraction")

    def loss(self, query: torch.Tensor, indices: torch.Tensor, streams: RandomStreams) -> tuple[torch.Tensor, dict]:
        """The inter loss of B x D unit-norm queries whose samples sit at bank `indices`, and its health logs.

        With negatives (NPIDv2, MoCov2): MarginNCE of the query against a random other member of its
        cluster and K sampled entries of other clusters. Without (BYOL): BYOL's 2 - 2 cos between the
        query and the positive alone. Logs, summed over the epoch: the share of positives, and of
        negatives, whose true class is the query's (0-dim tensors; nothing waits for the device)."""
        s, bank = self.settings, self.bank
        query_classes = self.truth[indices]
        # The record_function labels name the parts of a step in a profile (study.measure.benchmark); free otherwise.
        with torch.no_grad(), record_function("samplers"):
            clusters = Clusters(bank.labels, bank.num_clusters)
            positives = same_cluster_positives(clusters, indices, streams.inter_positives)
            logs = {"inter_batches": 1.0,
                    "inter_positives_same_class": (self.truth[positives] == query_classes).float().mean()}
            if self.samples_negatives:
                negatives = self.negatives(query, bank.labels[indices], clusters, streams.inter_negatives)
                same_class = rows(self.truth, negatives) == query_classes[:, None]
                logs["inter_negatives_same_class"] = same_class.float().mean()
        if not self.samples_negatives:
            return (2 - 2 * cosine(query, bank.features[positives])).mean(), logs
        loss = margin_nce(cosine(query, bank.features[positives]), cosine_many(query, rows(bank.features, negatives)),
                          s.inter_margin, s.temperature)
        return loss, logs

    def negatives(self, query: torch.Tensor, query_clusters: torch.Tensor, clusters: Clusters,
                  generator: torch.Generator) -> torch.Tensor:
        """The B x K negatives of B queries. Over several ranks each samples those of its share of the queries
        (the B x N similarity product and the pool's selection, the branch's largest work, divide over the
        ranks) with the whole batch's random keys, and the ranks gather them: the draws of one process, bit
        for bit on a CPU (on a GPU a share's similarity product may round differently in its last bits). Every
        rank checks the whole batch's pools, so a pool smaller than K fails on every rank, rank 0 included."""
        s, bank = self.settings, self.bank
        if self.ranks is None:
            return sample_negatives(query, bank.features, clusters, query_clusters, s.num_negatives,
                                    s.negative_sampling, s.pool_fraction, generator)
        assert_pools_hold(clusters, query_clusters, s.num_negatives, s.negative_sampling, s.pool_fraction)
        own_rows = self.ranks.rows(len(query))
        share = sample_negatives(query[own_rows], bank.features, clusters, query_clusters[own_rows], s.num_negatives,
                                 s.negative_sampling, s.pool_fraction, generator, rows=(own_rows, len(query)))
        return self.ranks.gather(share, len(query))

    def health(self, totals: dict) -> dict:
        """An epoch's health signals from its summed logs: the inter loss against its chance level (1 = a
        branch that tells nothing apart) and the true-class shares of positives and negatives."""
        batches = totals.get("inter_batches", 0.0)
        if not batches:
            return {}
        signals = {"loss_inter_chance": self.loss_at_chance,
                   "loss_inter_to_chance": totals["loss_inter"] / batches / self.loss_at_chance,
                   "inter_positives_same_class": totals["inter_positives_same_class"] / batches}
        if "inter_negatives_same_class" in totals:
            signals["inter_negatives_same_class"] = totals["inter_negatives_same_class"] / batches
        return signals

    def write(self, indices: torch.Tensor, features: torch.Tensor, step: int) -> dict:
        """Write B x D features at `indices`; with online labels, relabel them and rebalance every few steps
        (rebalancing reads the cluster sizes on the host: the one synchronisation, every rebalance_every steps)."""
        online = self.settings.label_mode == "online"
        with record_function("bank and labels"):
            logs = {"labels_changed": self.bank.write(indices, features, relabel=online)}
            if online and (step + 1) % self.settings.rebalance_every == 0:
                logs["clusters_reseeded"] = self.bank.rebalance(self.settings.min_cluster_size)
                self.check_pools(f"step {step} (online labels)")
        return logs

    def wants_offline_labels(self, epoch: int) -> bool:
        return self.settings.label_mode == "offline" and epoch % self.settings.offline_every == 0

    def relabel_offline(self, embeddings: torch.Tensor, epoch: int) -> float:
        """Offline labels: global k-means on freshly extracted embeddings replaces every pseudo-label.

        Returns the fraction of samples whose label changed. Cluster ids of two k-means runs are
        arbitrary, so each new cluster is first mapped to the old cluster most of its members had.
        A follower rank keeps its labels (0 changed) until rank 0's arrive at the end of the epoch.
        """
        if not self.leader:
            return 0.0
        old = self.bank.labels.clone()
        self.bank.label(self.global_labels(embeddings, self.seed + epoch), self.num_clusters)
        self.bank.rebalance(self.settings.min_cluster_size)
        self.check_pools(f"the offline labels of epoch {epoch}")
        new = self.bank.labels
        overlap = torch.zeros(self.num_clusters, self.num_clusters, dtype=torch.long, device=new.device)
        overlap.index_put_((new, old), torch.ones_like(new), accumulate=True)
        return float((overlap.argmax(dim=1)[new] != old).float().mean())

    def global_labels(self, embeddings: torch.Tensor, seed: int) -> torch.Tensor:
        s = self.settings
        labels, _ = global_kmeans(embeddings, self.num_clusters, s.kmeans_iters, seed, s.kmeans_backend, self.threads)
        return labels

    def label_quality(self, truth: torch.Tensor) -> dict:
        """How the pseudo-labels relate to the true classes (analysis only; training never sees classes):
        NMI, purity (share of samples in their cluster's majority class), and the spread of cluster
        sizes (coefficient of variation over non-empty clusters)."""
        from sklearn.metrics import normalized_mutual_info_score

        labels = self.bank.labels.cpu()
        table = torch.zeros(self.num_clusters, int(truth.max()) + 1, dtype=torch.long)
        table.index_put_((labels, truth), torch.ones_like(labels), accumulate=True)
        sizes = table.sum(dim=1)
        sizes = sizes[sizes > 0].double()
        return {"label_nmi": float(normalized_mutual_info_score(truth.numpy(), labels.numpy())),
                "label_purity": float(table.max(dim=1).values.sum()) / len(labels),
                "cluster_size_cv": float(sizes.std() / sizes.mean()) if len(sizes) > 1 else 0.0}
