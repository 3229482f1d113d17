import math

import torch
import torch.nn.functional as F

from trainers.evaluate import knn_top1, svm_map


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
