import math

import torch
import torch.nn.functional as F

from trainers.augment import evaluation_view
from trainers.data import synthetic
from trainers.evaluate import calibrate_batch_norm, knn_top1, svm_map
from trainers.networks import Encoder


def test_knn_hand_example():
    train = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    test = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.8]]), dim=1)
    # k=4 weighted vote with T=0.1: the third point is nearer the class-1 pair, so all three are right.
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 1]), k=4, temperature=0.1) == 100.0
    assert math.isclose(knn_top1(train, labels, test, torch.tensor([0, 1, 0]), k=4, temperature=0.1), 200 / 3)


def test_svm_map_separable_and_chance():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(30)
    separable = F.one_hot(labels, 3).float() + 0.05 * torch.randn(90, 3, generator=generator)
    assert svm_map(separable, labels, separable, labels) > 99.9
    noise_train, noise_test = torch.randn(90, 3, generator=generator), torch.randn(90, 3, generator=generator)
    assert svm_map(noise_train, labels, noise_test, labels) < 60  # chance AP is about 33


def test_calibrated_batch_norm_makes_eval_mode_compute_what_training_computes():
    data = synthetic(seed=0)  # 600 training images
    torch.manual_seed(0)
    encoder = Encoder("small-cnn", 1, head_hidden=32, embedding_dim=16, cnn_width=8)
    images = evaluation_view(data.train.images, 16, data.mean, data.std)
    with torch.no_grad():
        first_conv_output = encoder.backbone[0](images)  # the first batch norm's input, independent of any BN
        encoder.train()
        trained_mode = encoder(images)  # normalised by the statistics of this one batch, the whole set
        encoder.eval()
        placeholder_stats = encoder(images)
    # The placeholders (mean 0, variance 1) make eval mode another function: the premise of the fix.
    assert F.cosine_similarity(placeholder_stats, trained_mode).mean() < 0.95

    calibrate_batch_norm(encoder, data.train, 16, data.mean, data.std, torch.device("cpu"), batch_size=100)
    first = encoder.backbone[1]
    assert isinstance(first, torch.nn.BatchNorm2d)
    # Six equal batches: their cumulative average is the per-channel mean over all 600 images.
    assert torch.allclose(first.running_mean, first_conv_output.mean(dim=(0, 2, 3)), atol=1e-5)
    assert first.momentum == 0.1 and not encoder.training  # settings and mode as they were
    with torch.no_grad():
        calibrated = encoder(images)
    assert F.cosine_similarity(calibrated, trained_mode).min() > 0.99
