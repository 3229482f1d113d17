"""Scale profiles: the same trial code at every scale, with data, network and budgets picked here.

Scale-relative settings follow the paper's proportions: negatives K keep the paper's K/N
(4096 / 1.28M), so the semi-hard pool (10% of the bank) stays ~30x larger than K as in the paper;
clusters are a multiple of the class count; the minimum cluster size keeps the reference's
20 / 128 ratio to the mean cluster size. A profile covers every method: a trial takes the
settings its method has keys for (a MoCo trial has no clusters).

Evaluation keeps one protocol with fixed sizes at every scale: the SVMs learn from 5,000
class-balanced training features (the size of the papers' VOC07 trainval, the default
svm_train_size), the probe has a fixed budget of epochs over the cached features, and kNN runs
every `eval_every` epochs (epoch 0 and the last always). At tiny that is every fourth epoch:
re-embedding the training and test sets for kNN is most of a trial's evaluation time (every second
epoch it was a third of a whole trial's), no claim is judged on an intermediate epoch, and seven
points still draw each arm's kNN curve.

MarginNCE margins are mapped, not copied. A margin m shifts the positive's logit by |m| / tau, and
what that shift does depends on ln(K + 1), the loss of K + 1 indistinguishable candidates: in the
paper |m| / tau = 5 nats at m = -0.5 (tau 0.1) against ln(4097) = 8.3, while with the tiny K = 16,
ln(17) = 2.8, so m = -0.5 would drive the inter loss to ~0.15 and m = -1 to ~0.001, a branch
without gradient. A trial therefore gets m * ln(K + 1) / ln(K_paper + 1), where K_paper is the
paper's count of the same arm (K scaled by paper_negatives / the profile's K): the paper's balance
between margin and negatives at every K, and the paper's margins at the paper's K. Studies and
results keep the paper's values; only the trial configs hold the mapped ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from study.cost import UnitCosts
from trainers.config import DEFAULT_METHOD, TrialConfig


@dataclass(frozen=True)
class ScaleProfile:
    name: str
    description: str
    settings: dict = field(default_factory=dict)  # TrialConfig keys
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    paper_negatives: int = 4096  # the paper's K (its ablations') that this profile's num_negatives stands for
    costs: UnitCosts | None = None  # what `study.run --estimate` prices a trial with (study.cost)

    def config(self, **keys) -> TrialConfig:
        """A trial config at this scale: the method's defaults, then this profile's settings that the
        method has keys for, then `keys` (flat, `method` among them); margins given in the paper's
        values, mapped to this profile's K (see the module's docstring)."""
        own = TrialConfig.keys_of(keys.get("method", DEFAULT_METHOD))
        config = TrialConfig.create(**{**{k: v for k, v in self.settings.items() if k in own}, **keys})
        margins = {key: getattr(config, key) * self.margin_scale(config.num_negatives)
                   for key in MAPPED_MARGINS if key in own}
        return config.replace(**margins) if margins else config

    def margin_scale(self, negatives: int) -> float:
        """ln(K + 1) / ln(K_paper + 1) for a trial with K negatives (1 at the paper's own scale)."""
        paper = negatives * self.paper_negatives / self.settings["num_negatives"]
        return math.log(negatives + 1) / math.log(paper + 1)


# MarginNCE margins, mapped by the profile; the truncated triplet's margin C bounds a distance, not a logit.
MAPPED_MARGINS = ("intra_margin", "inter_margin")


PROFILES = {p.name: p for p in [
    ScaleProfile(
        "tiny", "2-core CPU: Fashion-MNIST, a class-balanced 5k training subset and the whole 10k test split, "
                "small CNN (width 16), 24 epochs",
        # K = 16 stands for the paper's 4,096 (paper_negatives): margins x 0.341 (-0.5 -> -0.170), and
        # x 0.430 at 4x K (64 for 16,384), x 0.500 at 16x K (256 for 65,536).
        # The whole test split: 1,000 test images gave a seed-to-seed SD of ~0.7 points, larger than most effects.
        {"dataset": "fashion-mnist", "network": "small-cnn", "cnn_width": 16, "image_size": 28,
         "train_subset": 5000, "test_subset": 0, "epochs": 24, "batch_size": 128, "lr": 0.03, "num_negatives": 16,
         "head_hidden": 512, "clusters_per_class": 10.0, "min_cluster_size": 8, "threads": 1, "device": "cpu",
         # MoCo's 0.999 averages over ~1,000 steps, more than the whole 936-step tiny run; 0.99 (~100 steps,
         # BYOL's base) keeps the key encoder a recent average of the query encoder, as at full scale.
         # The queue spans 4 batches (10% of an epoch; the paper's 16,384 span 64 batches, 1.3%).
         "encoder_momentum": 0.99, "queue_size": 512, "eval_every": 4},
        cpus_per_trial=1.0,
        costs=UnitCosts(
            "measured on a 2-core AMD EPYC: Trial.step medians with channels-last networks, one trial alone, "
            "x 1.05 for the neighbour trial; evaluation passes from eval_time_s, study.measure.svm_cost",
            train_size=5000, test_size=10000, classes=10, device="CPU",
            step_s={"npidv2": 0.052, "npidv2-interclr": 0.068, "mocov2": 0.075, "mocov2-interclr": 0.089,
                    "byol": 0.142, "byol-interclr": 0.149, "truncated-triplet": 0.151},
            forward_images_per_s=6000, decode_images_per_s=float("inf"), svm_s_per_class=0.4, kmeans_s=1.0)),
    ScaleProfile(
        "cifar", "a quarter GPU: CIFAR-10 python batches (--set data_root=DIR), ResNet-18 CIFAR stem, 100 epochs",
        # K = 160 stands for the paper's 4,096: margins x 0.611 (-0.5 -> -0.305).
        # CIFAR-10 is held in memory as uint8, so no loader workers; the CPU share is torch's threads.
        # A trial needs 3.1-5.0 GiB of GPU memory at bf16 (study.packing), so four share one GPU.
        {"dataset": "cifar10", "network": "resnet18-cifar", "load_size": 32, "image_size": 32,
         "epochs": 100, "batch_size": 256, "lr": 0.03, "num_negatives": 160, "head_hidden": 2048,
         "clusters_per_class": 10.0, "min_cluster_size": 20, "threads": 4, "num_workers": 0, "device": "cuda",
         "precision": "bf16",
         "eval_every": 5},
        cpus_per_trial=4.0, gpus_per_trial=0.25,
        costs=UnitCosts(
            "declared, not measured: a quarter of an H100 running ResNet-18 (CIFAR stem) in bf16 at about 2,500 "
            "images/s forward and backward; data in memory; SVMs 1 s per class per CPU",
            train_size=50000, test_size=10000, classes=10,
            step_s={"npidv2": 0.10, "npidv2-interclr": 0.11, "mocov2": 0.13, "mocov2-interclr": 0.14,
                    "byol": 0.25, "byol-interclr": 0.26, "truncated-triplet": 0.25},
            forward_images_per_s=8000, decode_images_per_s=float("inf"), svm_s_per_class=1.0, kmeans_s=2.0)),
    ScaleProfile(
        "imagenet", "GPU cluster: ImageNet ImageFolder (--set data_root=DIR), ResNet-50, the paper's settings",
        # The paper's own K: margins as the paper gives them.
        {"dataset": "imagefolder", "network": "resnet50", "load_size": 256, "image_size": 224,
         "epochs": 100, "batch_size": 256, "lr": 0.03, "num_negatives": 4096, "head_hidden": 2048,
         # Decoding JPEGs is the CPU's work: 6 loader workers, 2 torch threads, within the trial's 8 CPUs.
         "clusters_per_class": 10.0, "min_cluster_size": 20, "threads": 2, "num_workers": 6, "device": "cuda",
         "precision": "bf16",
         # Each evaluation re-embeds all 1.28 M training images; 10 probe epochs over them are 50k SGD steps.
         "eval_every": 10, "probe_epochs": 10,
         # 1,000 nearly separable classes in 2,048 dimensions: the dual solver, the reference code's, is ~2.5x faster.
         "svm_solver": "dual"},
        cpus_per_trial=8.0, gpus_per_trial=1.0,
        costs=UnitCosts(
            "declared, not measured: one H100 running ResNet-50 in bf16 at about 3,000 images/s forward and "
            "backward and 9,000 forward only; JPEG decode and resize 250 images/s per CPU worker and the dual "
            "solver's SVMs 4.0-4.2 s per class per CPU (both measured on a 2-core AMD EPYC); faiss k-means on "
            "the GPU, 60 s; decoding on the GPU (decode_on_device=true) 7,800 images/s (torchvision's batched nvjpeg "
            "decode of 1,000 ImageNet-sized JPEGs in 128 ms on one A100, pytorch/vision PR 8496)",
            train_size=1281167, test_size=50000, classes=1000,
            step_s={"npidv2": 0.095, "npidv2-interclr": 0.115, "mocov2": 0.115, "mocov2-interclr": 0.135,
                    "byol": 0.23, "byol-interclr": 0.25, "truncated-triplet": 0.23},
            forward_images_per_s=9000, decode_images_per_s=250, svm_s_per_class=4.2, kmeans_s=60.0,
            device_decode_images_per_s=7800,
            # The part of step_s every rank of a trial over several GPUs repeats for the whole batch: what is not the
            # networks' (256 images per trained view at 3,000/s, per target or key view at 9,000/s), less the part
            # of the inter branch's 20 ms that the ranks divide: half, the share of its row-wise sampling work (the
            # B x N product, the pool's selection, the own-cluster overwrite, the keys' top K: 2.6-3.4 of the
            # branch's 6.1 ms, timed part by part at the tiny profile). BYOL-InterCLR samples no negatives. The
            # random sampler divides less: every rank draws the whole batch's B x N keys.
            replicated_step_s={"npidv2": 0.010, "npidv2-interclr": 0.020, "mocov2": 0.001, "mocov2-interclr": 0.011,
                               "byol": 0.002, "byol-interclr": 0.022, "truncated-triplet": 0.002})),
]}
