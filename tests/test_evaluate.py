import math

import pytest
import torch
import torch.nn.functional as F

from trainers import evaluate, svm
from trainers.evaluate import calibrate_batch_norm, knn_top1, linear_probe_top1, svm_map, svm_subset
from trainers.augment import evaluation_view
from trainers.data import Canvases, batches, synthetic
from trainers.networks import Encoder


def test_knn_hand_example():
    train = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    test = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.8]]), dim=1)
    # k=4 weighted vote with T=0.1: the third point is nearer the class-1 pair, so all three are right.
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 1]), k=4, temperature=0.1) == 100.0
    assert math.isclose(knn_top1(train, labels, test, torch.tensor([0, 1, 0]), k=4, temperature=0.1), 200 / 3)
    # The temperature decides this vote: one class-0 neighbour at cosine 1 against two class-1 neighbours at
    # cosine 0.8. T=0.1: e^10 = 22,026 > 2 e^8 = 5,962, class 0. T=1: e^1 = 2.72 < 2 e^0.8 = 4.45, class 1.
    near = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    query, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert knn_top1(near, torch.tensor([0, 1, 1]), query, truth, k=3, temperature=0.1) == 100.0
    assert knn_top1(near, torch.tensor([0, 1, 1]), query, truth, k=3, temperature=1.0) == 0.0


def test_svm_map_separable_and_chance():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(30)
    separable = F.one_hot(labels, 3).float() + 0.05 * torch.randn(90, 3, generator=generator)
    assert svm_map(separable, labels, separable, labels) > 99.9
    noise_train, noise_test = torch.randn(90, 3, generator=generator), torch.randn(90, 3, generator=generator)
    assert svm_map(noise_train, labels, noise_test, labels) < 60  # chance AP is about 33


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_svm_map_does_not_depend_on_the_worker_count(solver, monkeypatch):
    """Classes fitted in worker processes give exactly the sequential result. The classes overlap so much
    that the dual solver stops at its iteration limit, where its coordinate order (liblinear's random
    generator, one per process) decides the weights: a generator shared across workers would show."""
    train, labels = gaussian_classes(40, 6, 8, 2.0, seed=5)
    test, test_labels = gaussian_classes(40, 6, 8, 2.0, seed=6)
    sequential = svm_map(train, labels, test, test_labels, solver=solver)
    assert 30 < sequential < 95  # neither trivial nor chance, so the classes' APs differ
    pools = []

    class RecordedPool(svm.ProcessPoolExecutor):
        def __init__(self, workers, **options):
            pools.append(workers)
            super().__init__(workers, **options)

    monkeypatch.setattr(svm, "ProcessPoolExecutor", RecordedPool)
    assert svm_map(train, labels, test, test_labels, workers=3, solver=solver) == sequential
    assert pools == []  # 6 classes are too few to start processes for
    monkeypatch.setattr(svm, "PARALLEL_MIN_CLASSES", 6)
    assert svm_map(train, labels, test, test_labels, workers=3, solver=solver) == sequential
    assert pools == [3]
    if solver == "dual":  # the premise: on these features another coordinate order gives other weights
        from sklearn.svm import LinearSVC
        x, positive = train.double().numpy(), (labels == 0).int().numpy()
        fits = [LinearSVC(C=100.0, dual=True, max_iter=2000, random_state=state).fit(x, positive).coef_
                for state in (0, 1)]
        assert not (fits[0] == fits[1]).all()


def test_the_two_solvers_reach_the_same_svms():
    """Primal and dual minimise one strictly convex objective: the same mAP up to where each stops,
    on overlapping classes where the dual's coordinate descent takes many passes."""
    train, train_labels = gaussian_classes(60, 4, 8, 1.0, seed=3)
    test, test_labels = gaussian_classes(60, 4, 8, 1.0, seed=4)
    primal = svm_map(train, train_labels, test, test_labels, solver="primal")
    dual = svm_map(train, train_labels, test, test_labels, solver="dual")
    assert 40 < primal < 97 and dual != primal  # not separable, and two different solvers ran
    assert abs(dual - primal) < 0.5
    with pytest.raises(ValueError, match="not one of primal, dual"):
        svm_map(train, train_labels, test, test_labels, solver="newton")


def gaussian_classes(per_class, classes, dims, spread, seed):
    """Classes as Gaussian blobs around fixed random means; `spread` sets how much they overlap."""
    means = torch.randn(classes, dims, generator=torch.Generator().manual_seed(100))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return means[labels] + spread * torch.randn(len(labels), dims, generator=generator), labels


def test_knn_in_chunks_matches_a_brute_force_vote(monkeypatch):
    train, train_labels = gaussian_classes(40, 4, 8, 1.5, seed=1)
    test, test_labels = gaussian_classes(25, 4, 8, 1.5, seed=2)
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    correct = 0
    for x, label in zip(test, test_labels):  # one test sample at a time, every vote summed by hand
        similarity = train @ x
        nearest = similarity.argsort(descending=True)[:20]
        votes = [sum(math.exp(float(similarity[i]) / 0.1) for i in nearest if train_labels[i] == c) for c in range(4)]
        correct += int(max(range(4), key=votes.__getitem__) == int(label))
    monkeypatch.setattr(evaluate, "KNN_SIMILARITIES_PER_CHUNK", 7 * len(train))  # chunks of 7 test samples
    assert knn_top1(train, train_labels, test, test_labels, k=20, temperature=0.1) == 100.0 * correct / len(test)


def test_linear_probe_separates_separable_classes():
    train, train_labels = gaussian_classes(50, 5, 10, 0.1, seed=1)
    test, test_labels = gaussian_classes(20, 5, 10, 0.1, seed=2)
    assert linear_probe_top1(train, train_labels, test, test_labels, epochs=20) == 100.0


def test_linear_probe_agrees_with_logistic_regression_on_overlapping_classes():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, train_labels = gaussian_classes(400, 5, 20, 2.5, seed=1)
    test, test_labels = gaussian_classes(200, 5, 20, 2.5, seed=2)
    optimum = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train.numpy(), train_labels.numpy())
    reference = 100.0 * optimum.score(test.numpy(), test_labels.numpy())
    assert 50 < reference < 95  # hard enough that a poor optimiser would show
    probe = linear_probe_top1(train, train_labels, test, test_labels, epochs=50, seed=3)
    assert abs(probe - reference) <= 1.5
    assert linear_probe_top1(train, train_labels, test, test_labels, epochs=50, seed=3) == probe


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_probe_and_knn_run_on_the_features_device(device):
    train, train_labels = gaussian_classes(100, 4, 16, 1.5, seed=1)
    test, test_labels = gaussian_classes(50, 4, 16, 1.5, seed=2)
    created = []
    original = torch.Tensor.__matmul__

    def recording_matmul(a, b):
        created.append(a.device.type)
        return original(a, b)

    on_device = [t.to(device) for t in (train, train_labels, test, test_labels)]
    with pytest.MonkeyPatch.context() as patch:  # the kNN's similarity products run where the features are
        patch.setattr(torch.Tensor, "__matmul__", recording_matmul)
        knn = knn_top1(*on_device, k=10)
    assert created and set(created) == {device}
    assert knn == knn_top1(train, train_labels, test, test_labels, k=10)
    probe = linear_probe_top1(*on_device, epochs=10)
    assert abs(probe - linear_probe_top1(train, train_labels, test, test_labels, epochs=10)) <= 1.0


def test_svm_subset_is_fixed_class_balanced_and_whole_when_large():
    labels = torch.arange(4).repeat(30)[torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    subset = svm_subset(labels, 40)
    assert len(subset) == 40 and torch.equal(torch.bincount(labels[subset]), torch.full((4,), 10))
    assert len(set(subset.tolist())) == 40 and torch.equal(subset, svm_subset(labels, 40))
    assert torch.equal(svm_subset(labels, 120), torch.arange(120))


def test_calibrated_batch_norm_makes_eval_mode_compute_what_training_computes():
    data = synthetic(seed=0)  # 600 training images
    torch.manual_seed(0)
    encoder = Encoder("small-cnn", 1, head_hidden=32, embedding_dim=16, cnn_width=8)
    images = evaluation_view(Canvases(data.train.images), 16, data.mean, data.std)
    with torch.no_grad():
        first_conv_output = encoder.backbone[0](images)  # the first batch norm's input, independent of any BN
        encoder.train()
        trained_mode = encoder(images)  # normalised by the statistics of this one batch, the whole set
        encoder.eval()
        placeholder_stats = encoder(images)
    # The placeholders (mean 0, variance 1) make eval mode another function: the premise of the fix.
    assert F.cosine_similarity(placeholder_stats, trained_mode).mean() < 0.95

    calibrate_batch_norm(encoder, batches(data.train, 100, shuffle=False), 16, data.mean, data.std, torch.device("cpu"))
    first = encoder.backbone[1]
    assert isinstance(first, torch.nn.BatchNorm2d)
    # Six equal batches: their cumulative average is the per-channel mean over all 600 images.
    assert torch.allclose(first.running_mean, first_conv_output.mean(dim=(0, 2, 3)), atol=1e-5)
    assert first.momentum == 0.1 and not encoder.training  # settings and mode as they were
    with torch.no_grad():
        calibrated = encoder(images)
    assert F.cosine_similarity(calibrated, trained_mode).min() > 0.99


def test_a_bf16_trial_extracts_bf16_features_into_one_buffer_and_every_metric_reads_them():
    torch.manual_seed(0)
    encoder = Encoder("small-cnn", 1, 32, 16, cnn_width=8)
    data = synthetic(seed=0)
    loader = batches(data.train, 64, shuffle=False)
    features, embeddings = evaluate.extract(encoder, loader, 16, data.mean, data.std, torch.device("cpu"))
    half, half_embeddings = evaluate.extract(encoder, loader, 16, data.mean, data.std, torch.device("cpu"),
                                             precision="bf16")
    assert features.dtype == torch.float32 and half.dtype == torch.bfloat16 and half_embeddings.dtype == torch.float32
    assert features.shape == half.shape == (len(data.train), 32)
    assert torch.equal(half, features.to(torch.bfloat16)) and torch.equal(half_embeddings, embeddings)
    # The same extraction as the per-batch pieces, in dataset order.
    encoder.eval()
    with torch.no_grad():
        pieces = [F.normalize(encoder.features_and_projection(evaluation_view(images, 16, data.mean, data.std))[0], dim=1)
                  for images, _, _ in loader]
    assert torch.equal(features, torch.cat(pieces))

    # Separable classes read as bf16: the metrics still see them (votes, probe and SVMs computed in fp32).
    train, train_labels = gaussian_classes(50, 5, 10, 0.1, seed=1)
    test, test_labels = gaussian_classes(20, 5, 10, 0.1, seed=2)
    train, test = F.normalize(train, dim=1).to(torch.bfloat16), F.normalize(test, dim=1).to(torch.bfloat16)
    assert knn_top1(train, train_labels, test, test_labels, k=20) == 100.0
    assert linear_probe_top1(train, train_labels, test, test_labels, epochs=20) == 100.0
    assert svm_map(train, train_labels, test, test_labels, costs=(1.0,)) == pytest.approx(100.0)
