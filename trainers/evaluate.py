"""Frozen-feature evaluation: weighted kNN top-1 (NPID), a linear probe, and one-vs-rest linear SVM mAP
(Goyal et al.).

All use the backbone's pooled features, L2-normalised, of un-augmented images. They stand in for
the papers' ImageNet linear and VOC07 SVM benchmarks on the profile's own labelled data. The same
protocol runs at every scale with fixed sizes: kNN and the probe run on the features' device, the
probe for a fixed number of epochs over the cached features, and the SVMs on a fixed-size
class-balanced subset of the training features (the papers' VOC07 trainval holds about 5k images).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainers import svm
from trainers.augment import evaluation_view
from trainers.data import balanced_indices
from trainers.losses import softmax_cross_entropy

SVM_COSTS = (0.01, 0.1, 1.0, 10.0, 100.0)
SVM_FOLDS = 3
PROBE_BATCH_SIZE = 256
PROBE_LR = 0.5  # SGD with momentum 0.9 and a cosine schedule on standardised features
PROBE_MOMENTUM = 0.9
KNN_SIMILARITIES_PER_CHUNK = 2 ** 26  # test x train similarities held at once (256 MB of float32)


def feature_dtype(precision: str) -> torch.dtype:
    """The dtype a trial keeps its extracted features in: bf16 for a bf16 trial, else float32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


@torch.no_grad()
def extract(encoder, batches, image_size: int, mean, std, device,
            precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised backbone features N x F in the trial's feature_dtype(precision), embeddings N x D in float32)
    of every image of `batches` (trainers.data.evaluation_batches), in dataset order.

    Both are written into buffers allocated once, so the peak is the features themselves, not twice them
    as a concatenation of per-batch pieces would make it. A bf16 trial keeps its features in bf16: at
    ImageNet scale the training set's 1.28M x 2,048 features take 5.2 GB instead of 10.5 GB."""
    was_training = encoder.training
    encoder.eval()
    features = embeddings = None
    start = 0
    for images, _, _ in batches:
        x = evaluation_view(images.to(device, non_blocking=True), image_size, mean, std)
        backbone, projection = encoder.features_and_projection(x)
        if features is None:
            count = len(batches.dataset)
            features = torch.empty(count, backbone.shape[1], dtype=feature_dtype(precision), device=device)
            embeddings = torch.empty(count, projection.shape[1], dtype=torch.float32, device=device)
        stop = start + len(backbone)
        features[start:stop] = F.normalize(backbone, dim=1)
        embeddings[start:stop] = F.normalize(projection, dim=1)
        start = stop
    encoder.train(was_training)
    if features is None or start != len(features):  # an unfilled row of torch.empty would pass as a feature
        raise ValueError(f"the evaluation loader gave {start} images of its dataset's {len(batches.dataset)}")
    return features, embeddings


@torch.no_grad()
def calibrate_batch_norm(encoder, batches, image_size: int, mean, std, device) -> None:
    """Set every batch-norm layer's running statistics to the average over the un-augmented training set.

    A new network's running statistics are PyTorch's placeholders (mean 0, variance 1), so in eval
    mode it computes a different function from the one training runs, which normalises by batch
    statistics: at the tiny scale a random network's eval-mode embedding of an image has cosine
    0.67 with its train-mode one, and all eval-mode embeddings sit in a cone of mean cosine 0.98.
    A memory bank initialised from those embeddings holds features unlike every feature later
    written into it. Calibrating first makes the epoch-0 evaluation and the initial bank use the
    network as training uses it. Deterministic: `batches` (trainers.data.evaluation_batches) in dataset
    order, no augmentation.
    """
    layers = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    was_training = encoder.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over all batches
    encoder.train()
    for images, _, _ in batches:
        encoder(evaluation_view(images.to(device, non_blocking=True), image_size, mean, std))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    encoder.train(was_training)


@torch.no_grad()
def knn_top1(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
             test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1) -> float:
    """NPID's weighted kNN: the k most cosine-similar training samples vote with weight exp(s / T).

    Runs on the features' device in chunks of test samples sized so that one chunk's similarities
    fit in KNN_SIMILARITIES_PER_CHUNK; the count of correct votes is read once at the end."""
    device = train_features.device
    num_classes = int(train_labels.max()) + 1
    k = min(k, len(train_features))
    train_labels = train_labels.to(device)
    chunk = max(1, KNN_SIMILARITIES_PER_CHUNK // len(train_features))
    correct = torch.zeros((), dtype=torch.long, device=device)
    for features, labels in zip(test_features.to(device).split(chunk), test_labels.to(device).split(chunk)):
        # bf16 features: neighbours ranked on bf16 similarities, their votes weighed in fp32
        similarity, neighbours = (features @ train_features.T).float().topk(k, dim=1)
        votes = torch.zeros(len(features), num_classes, device=device)
        votes.scatter_add_(1, train_labels[neighbours], torch.exp(similarity / temperature))
        correct += (votes.argmax(dim=1) == labels).sum()
    return 100.0 * int(correct) / len(test_features)


def linear_probe_top1(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, epochs: int, seed: int = 0) -> float:
    """Top-1 of a multinomial logistic-regression classifier trained by minibatch SGD on standardised
    frozen features, on the features' device.

    Stands in for the papers' ImageNet linear evaluation. The budget is fixed in epochs over the
    cached features (batch PROBE_BATCH_SIZE, lr PROBE_LR with a cosine decay), so its cost grows
    with the data and not with how hard the problem is; the weights start at zero and the sample
    order comes from `seed` on the CPU, so a CPU run is deterministic."""
    device = train_features.device
    mean = train_features.mean(dim=0, dtype=torch.float32)  # bf16 features: standardised in fp32
    std = train_features.std(dim=0, unbiased=False).float()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature carries no information
    num_classes = int(train_labels.max()) + 1
    train_labels = train_labels.to(device)
    weight = torch.zeros(num_classes, train_features.shape[1], device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=PROBE_LR, momentum=PROBE_MOMENTUM)
    steps_per_epoch = math.ceil(len(train_features) / PROBE_BATCH_SIZE)
    total_steps = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    order_generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(train_features), generator=order_generator).to(device)
            for batch in order.split(PROBE_BATCH_SIZE):
                x = (train_features[batch] - mean) / std
                loss = softmax_cross_entropy(F.linear(x, weight, bias), train_labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    with torch.no_grad():
        predicted = F.linear((test_features.to(device) - mean) / std, weight, bias).argmax(dim=1)
        return 100.0 * int((predicted == test_labels.to(device)).sum()) / len(test_features)


def svm_subset(train_labels: torch.Tensor, size: int) -> torch.Tensor:
    """Positions of the training samples the SVMs learn from: a fixed class-balanced subset of `size`,
    the whole training set when it is no larger."""
    if size >= len(train_labels):
        return torch.arange(len(train_labels))
    return balanced_indices(train_labels.cpu(), size, int(train_labels.max()) + 1)


def svm_map(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
            test_labels: torch.Tensor, costs=SVM_COSTS, folds: int = SVM_FOLDS, seed: int = 0, workers: int = 1,
            classes=None, solver: str = "primal") -> float:
    """Mean over classes (`classes`, default all of the training labels') of the test average precision
    of one-vs-rest linear SVMs, Goyal et al.'s protocol with liblinear's `solver` (trainers.svm); classes
    are fitted on `workers` processes, with the same result for every worker count."""
    y_train = train_labels.cpu().numpy()
    return svm.mean_average_precision(train_features.cpu().float().numpy(), y_train,
                                      test_features.cpu().float().numpy(), test_labels.cpu().numpy(),
                                      np.unique(y_train) if classes is None else classes, costs, folds, seed,
                                      solver, workers)
