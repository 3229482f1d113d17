"""Frozen-feature evaluation: weighted kNN top-1 (NPID) and one-vs-rest linear SVM mAP (Goyal et al.).

Both use the backbone's pooled features, L2-normalised, of un-augmented images. They stand in for
the papers' ImageNet linear and VOC07 SVM benchmarks on the profile's own labelled data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainers.augment import evaluation_view
from trainers.data import batches

SVM_COSTS = (0.01, 0.1, 1.0, 10.0, 100.0)
SVM_FOLDS = 3


@torch.no_grad()
def extract(encoder, dataset, image_size: int, mean, std, device, batch_size: int = 128,
            num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised backbone features N x F, embeddings N x D) of every image, in dataset order."""
    was_training = encoder.training
    encoder.eval()
    features, embeddings = [], []
    for images, _, _ in batches(dataset, batch_size, shuffle=False, num_workers=num_workers):
        x = evaluation_view(images.to(device, non_blocking=True), image_size, mean, std)
        backbone = encoder.backbone(x)
        features.append(F.normalize(backbone, dim=1))
        embeddings.append(F.normalize(encoder.head(backbone), dim=1))
    encoder.train(was_training)
    return torch.cat(features), torch.cat(embeddings)


@torch.no_grad()
def calibrate_batch_norm(encoder, dataset, image_size: int, mean, std, device, batch_size: int = 128,
                         num_workers: int = 0) -> None:
    """Set every batch-norm layer's running statistics to the average over the un-augmented training set.

    A new network's running statistics are PyTorch's placeholders (mean 0, variance 1), so in eval
    mode it computes a different function from the one training runs, which normalises by batch
    statistics: at the tiny scale a random network's eval-mode embedding of an image has cosine
    0.67 with its train-mode one, and all eval-mode embeddings sit in a cone of mean cosine 0.98.
    A memory bank initialised from those embeddings holds features unlike every feature later
    written into it. Calibrating first makes the epoch-0 evaluation and the initial bank use the
    network as training uses it. Deterministic: dataset order, no augmentation.
    """
    layers = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    was_training = encoder.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over all batches
    encoder.train()
    for images, _, _ in batches(dataset, batch_size, shuffle=False, num_workers=num_workers):
        encoder(evaluation_view(images.to(device, non_blocking=True), image_size, mean, std))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    encoder.train(was_training)


@torch.no_grad()
def knn_top1(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
             test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> float:
    """NPID's weighted kNN: the k most cosine-similar training samples vote with weight exp(s / T)."""
    num_classes = int(train_labels.max()) + 1
    k = min(k, len(train_features))
    train_labels = train_labels.to(train_features.device)
    correct = 0
    for features, labels in zip(test_features.split(chunk), test_labels.to(test_features.device).split(chunk)):
        similarity, neighbours = (features @ train_features.T).topk(k, dim=1)
        votes = torch.zeros(len(features), num_classes, device=features.device)
        votes.scatter_add_(1, train_labels[neighbours], torch.exp(similarity / temperature))
        correct += int((votes.argmax(dim=1) == labels).sum())
    return 100.0 * correct / len(test_features)


def linear_probe_top1(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, seed: int = 0) -> float:
    """Top-1 of a multinomial logistic-regression classifier on standardised frozen features.

    Stands in for the papers' ImageNet linear evaluation; L-BFGS on the full training set reaches the
    optimum of the convex problem, so the number reflects the features, not an SGD schedule.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(train_features.cpu().numpy(), train_labels.cpu().numpy())
    return 100.0 * float(probe.score(test_features.cpu().numpy(), test_labels.cpu().numpy()))


def svm_map(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
            test_labels: torch.Tensor, costs=SVM_COSTS, folds: int = SVM_FOLDS, seed: int = 0) -> float:
    """Mean over classes of the test average precision of one-vs-rest linear SVMs.

    As in Goyal et al. 2019: per class, the SVM cost is chosen by k-fold cross-validated AP on the
    training features, positives are weighted 2:1, and the chosen SVM is refit on all training data.
    """
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    x_train, x_test = train_features.cpu().numpy(), test_features.cpu().numpy()
    y_train, y_test = train_labels.cpu().numpy(), test_labels.cpu().numpy()
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)

    def svm(cost: float) -> LinearSVC:
        return LinearSVC(C=cost, class_weight={1: 2.0, 0: 1.0}, dual=False, max_iter=2000, random_state=seed)

    precisions = []
    for cls in np.unique(y_train):
        positive_train, positive_test = (y_train == cls).astype(int), (y_test == cls).astype(int)
        cv_ap = [cross_val_score(svm(c), x_train, positive_train, cv=split, scoring="average_precision").mean()
                 for c in costs]
        best = svm(costs[int(np.argmax(cv_ap))]).fit(x_train, positive_train)
        precisions.append(average_precision_score(positive_test, best.decision_function(x_test)))
    return 100.0 * float(np.mean(precisions))
