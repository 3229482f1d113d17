"""Backbones per scale profile and the encoder (backbone + NPIDv2's 2-layer MLP head)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.distributed import Ranks, shard_map


class GlobalAveragePool(nn.Module):
    """B x C x H x W -> B x C means. Its backward is deterministic on CUDA, unlike AdaptiveAvgPool2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2), fast on CPU where no gradient is needed.

    PyTorch's CPU max pooling computes indices even under no_grad. Without autograd (feature
    extraction, batch-norm calibration, momentum targets and keys) the maximum of the window's four
    strided views gives the same values, 1.5-2x faster on the tiny scale's channels-last activations
    (6x on NCHW ones) on an AMD EPYC. With autograd PyTorch's kernel runs, because its
    backward sends a window's gradient to the first maximal element, which a sum over tied corners would
    not (ties are common: constant backgrounds through conv-BN-ReLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # an odd last row or column is dropped
        corners = [x[..., dy:height:2, dx:width:2] for dy in (0, 1) for dx in (0, 1)]
        return torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))


def small_cnn(in_channels: int, width: int) -> tuple[nn.Module, int]:
    """Three conv-BN-ReLU stages (width, 2 width, 4 width channels) for 28x28 images: the `tiny` backbone."""
    def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + ([MaxPool2x2()] if pool else [])

    body = nn.Sequential(*stage(in_channels, width, True), *stage(width, 2 * width, True),
                         *stage(2 * width, 4 * width, False), GlobalAveragePool())
    return body, 4 * width


def resnet(name: str, in_channels: int) -> tuple[nn.Module, int]:
    from torchvision.models import resnet18, resnet50

    if name == "resnet18-cifar":
        net = resnet18()
        # The CIFAR stem: a 3x3 stride-1 first convolution and no max-pool, for 32x32 inputs.
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net = resnet50()
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.avgpool, net.fc = GlobalAveragePool(), nn.Identity()
    return net, dim


def backbone(name: str, in_channels: int, cnn_width: int) -> tuple[nn.Module, int]:
    return small_cnn(in_channels, cnn_width) if name == "small-cnn" else resnet(name, in_channels)


def mlp(in_dim: int, hidden: int, out_dim: int, batchnorm: bool) -> nn.Sequential:
    """Two layers: NPIDv2's head is Linear-ReLU-Linear; BYOL's projector and predictor put a
    BatchNorm after the hidden layer, which keeps the online/target pair from collapsing."""
    hidden_layers = [nn.Linear(in_dim, hidden)] + ([nn.BatchNorm1d(hidden)] if batchnorm else [])
    return nn.Sequential(*hidden_layers, nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def compute_precision(device: torch.device | str, bf16: bool):
    """The trial's compute precision around any network's forward: bf16 autocast where asked, else nothing."""
    device_type = device.type if isinstance(device, torch.device) else device
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)


class Encoder(nn.Module):
    """image -> backbone features (evaluated) -> MLP head -> L2-normalised embedding (trained).

    With bf16 both networks run under autocast and what leaves the encoder is float32, so
    everything downstream (banks, queues, similarities, logits, losses) stays float32. Every caller
    goes through `forward` or `features_and_projection`, so no path runs the layers outside the
    trial's precision."""

    def __init__(self, network: str, in_channels: int, head_hidden: int, embedding_dim: int, cnn_width: int = 32,
                 head_batchnorm: bool = False, bf16: bool = False):
        super().__init__()
        self.backbone, self.feature_dim = backbone(network, in_channels, cnn_width)
        self.head = mlp(self.feature_dim, head_hidden, embedding_dim, head_batchnorm)
        self.bf16 = bf16
        self.ranks: Ranks | None = None  # set by trainers.distributed.distribute in a trial over several ranks

    def features_and_projection(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x F backbone features, B x D head output before normalisation), both float32. In a trial over
        several ranks each computes its share of the batch and all receive the whole batch's outputs."""
        return shard_map(self.ranks, self._features_and_projection, images)

    def _features_and_projection(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with compute_precision(images.device, self.bf16):
            features = self.backbone(images)
            projection = self.head(features)
        return features.float(), projection.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features_and_projection(images)[1], dim=1)


def build_encoder(config, channels: int, device: torch.device, head_batchnorm: bool = False) -> Encoder:
    """A trial's encoder on its device, its convolution weights in channels-last layout on every device.

    Channels-last is the layout the oneDNN (CPU) and cuDNN (GPU) convolution kernels are fastest in, and
    each convolution's output keeps it, so the images are converted once, by the first convolution. On a
    2-core AMD EPYC the tiny scale's training step is 1.34-1.45x faster than in NCHW, one thread
    (`python -m study.measure.benchmark --layouts`)."""
    encoder = Encoder(config.network, channels, config.head_hidden, config.embedding_dim, config.cnn_width,
                      head_batchnorm, bf16=config.precision == "bf16").to(device)
    return encoder.to(memory_format=torch.channels_last)
