"""NPIDv2-InterCLR: an intra-image branch (NPID with a memory bank) plus an inter-image branch whose
positives and negatives come from k-means pseudo-labels kept in the bank.

Per iteration, for a batch of images with dataset indices i and query embeddings v = f(aug(x_i)):
  intra: positive bank[i], K negatives uniform over the bank (NPID), MarginNCE with the intra margin;
  inter: positive a random other member of i's cluster, K negatives from the configured sampler over
         entries of other clusters, MarginNCE with the inter margin;
  loss = lambda * L_intra + (1 - lambda) * L_inter; then bank[i] <- normalize((1 - w) bank[i] + w v)
  and, with online labels, i is relabelled to its nearest centroid.
"""

from __future__ import annotations

import torch

from trainers.augment import training_view
from trainers.evaluate import extract
from trainers.kmeans import global_kmeans
from trainers.losses import margin_nce
from trainers.memory_bank import MemoryBank
from trainers.networks import Encoder
from trainers.samplers import same_cluster_positives, sample_negatives


class InterCLR:
    def __init__(self, config, data, device: torch.device):
        self.config, self.data, self.device = config, data, device
        self.encoder = Encoder(config.network, data.channels, config.head_hidden, config.embedding_dim,
                               config.cnn_width).to(device)
        self.num_clusters = config.num_clusters(data.num_classes)
        self.bank: MemoryBank | None = None

    def parameters(self):
        return self.encoder.parameters()

    def start(self, embeddings: torch.Tensor, generator: torch.Generator) -> dict:
        """After the epoch-0 evaluation: build the bank; returns the initial labels' quality."""
        self.initialize_bank(embeddings)
        return self.pseudo_label_quality()

    def after_step(self, progress: float) -> None:
        """Nothing: the bank is written inside the training step."""

    def end_epoch(self, epoch: int) -> dict:
        """Offline labels: every offline_every epochs, re-embed the training set and rerun k-means."""
        c = self.config
        if c.label_mode != "offline" or epoch % c.offline_every != 0:
            return {}
        _, embeddings = extract(self.encoder, self.data.train, c.image_size, self.data.mean, self.data.std,
                                self.device, num_workers=c.num_workers)
        return {"labels_changed": self.relabel_offline(embeddings, epoch) * len(self.data.train)}

    def epoch_metrics(self, totals: dict) -> dict:
        return {"labels_changed": totals.get("labels_changed", 0.0) / len(self.data.train),
                "clusters_reseeded": totals.get("clusters_reseeded", 0.0), **self.pseudo_label_quality()}

    def pseudo_label_quality(self) -> dict:
        """How the pseudo-labels relate to the true classes (analysis only; training never sees classes):
        NMI, purity (share of samples in their cluster's majority class), and the spread of cluster
        sizes (coefficient of variation over non-empty clusters)."""
        from sklearn.metrics import normalized_mutual_info_score

        truth, labels = self.data.train_labels(), self.bank.labels.cpu()
        table = torch.zeros(self.num_clusters, self.data.num_classes, dtype=torch.long)
        table.index_put_((labels, truth), torch.ones_like(labels), accumulate=True)
        sizes = table.sum(dim=1)
        sizes = sizes[sizes > 0].double()
        return {"label_nmi": float(normalized_mutual_info_score(truth.numpy(), labels.numpy())),
                "label_purity": float(table.max(dim=1).values.sum()) / len(labels),
                "cluster_size_cv": float(sizes.std() / sizes.mean()) if len(sizes) > 1 else 0.0}

    def initialize_bank(self, embeddings: torch.Tensor) -> None:
        """Bank = the initial network's embeddings, labelled by global k-means (the paper's start)."""
        self.bank = MemoryBank(embeddings, self.global_labels(embeddings, self.config.seed), self.num_clusters,
                               self.config.bank_momentum)
        self.bank.rebalance(self.config.min_cluster_size)

    def relabel_offline(self, embeddings: torch.Tensor, epoch: int) -> float:
        """Offline labels: global k-means on freshly extracted embeddings replaces every pseudo-label.

        Returns the fraction of samples whose label changed. Cluster ids of two k-means runs are
        arbitrary, so each new cluster is first mapped to the old cluster most of its members had.
        """
        old = self.bank.labels.clone()
        new = self.global_labels(embeddings, self.config.seed + epoch)
        self.bank.relabel_all(new)
        self.bank.rebalance(self.config.min_cluster_size)
        new = self.bank.labels
        overlap = torch.zeros(self.num_clusters, self.num_clusters, dtype=torch.long, device=new.device)
        overlap.index_put_((new, old), torch.ones_like(new), accumulate=True)
        return float((overlap.argmax(dim=1)[new] != old).float().mean())

    def global_labels(self, embeddings: torch.Tensor, seed: int) -> torch.Tensor:
        c = self.config
        labels, _ = global_kmeans(embeddings, self.num_clusters, c.kmeans_iters, seed, c.kmeans_backend, c.threads)
        return labels

    def training_step(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, iteration: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """One iteration's loss; `labels` (true classes) are not used by InterCLR."""
        c, bank = self.config, self.bank
        view = training_view(images, c.image_size, self.data.mean, self.data.std, generator)
        query = self.encoder(view)  # B x D, unit norm
        loss = torch.zeros((), device=self.device)
        logs: dict[str, float] = {}

        if c.loss_lambda > 0:
            negatives = torch.randint(len(bank.features), (len(indices), c.num_negatives), generator=generator,
                                      device=self.device)
            intra = margin_nce(_cosine(query, bank.features[indices]), _cosine_many(query, bank.features[negatives]),
                               c.intra_margin, c.temperature)
            loss = loss + c.loss_lambda * intra
            logs["loss_intra"] = float(intra.detach())

        if c.loss_lambda < 1:
            with torch.no_grad():
                similarity = torch.mm(query, bank.features.t())  # B x N, only to rank the bank for the samplers
                eligible = bank.labels[None, :] != bank.labels[indices][:, None]
                negatives = sample_negatives(similarity, eligible, c.num_negatives, c.negative_sampling,
                                             c.pool_fraction, generator)
                positives = same_cluster_positives(bank.labels, indices, generator)
            inter = margin_nce(_cosine(query, bank.features[positives]), _cosine_many(query, bank.features[negatives]),
                               c.inter_margin, c.temperature)
            loss = loss + (1 - c.loss_lambda) * inter
            logs["loss_inter"] = float(inter.detach())

        online = c.label_mode == "online"
        logs["labels_changed"] = bank.write(indices, query, relabel=online)
        if online and (iteration + 1) % c.rebalance_every == 0:
            logs["clusters_reseeded"] = bank.rebalance(c.min_cluster_size)
        return loss, logs

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.bank = MemoryBank.from_state_dict(state["bank"])


def _cosine(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """B x D, B x D -> B (both unit norm)."""
    return (query * keys).sum(dim=1)


def _cosine_many(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """B x D, B x K x D -> B x K."""
    return torch.einsum("bd,bkd->bk", query, keys)
