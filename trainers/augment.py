"""Augmentation recipes on whole batches, with independent random parameters per image.

Each recipe is random resized crop and horizontal flip as one affine resampling, colour jitter
(applied with a probability), random grayscale, Gaussian blur (sigma 0.1-2, kernel about 10% of
the crop side) and solarisation, with the papers' parameters:
  NPIDv2    crop scale 0.2-1, jitter 0.4/0.4 saturation [0, 2] hue [-0.5, 0.5] (p 0.8), blur p 0.5;
  MoCo v2   crop scale 0.2-1, jitter 0.4/0.4/0.4/0.1 (p 0.8), grayscale p 0.2, blur p 0.5;
  BYOL      crop scale 0.08-1, jitter 0.4/0.4/0.2/0.1 (p 0.8), grayscale p 0.2, and two asymmetric
            views: blur p 1.0 / 0.1, solarisation p 0 / 0.2.
Saturation, hue and grayscale are identities on grayscale images. A step that a recipe never
applies draws no random numbers, so adding one to a recipe leaves the others' streams as they were.
Working on batches keeps augmentation off the critical path on a CPU and lets it run on the GPU.

Images arrive on canvases (trainers.data.Canvases): crops are drawn inside each image's valid
region, with area and aspect ratio relative to that region, as torchvision's RandomResizedCrop takes
them on the original image, and resampling never reads the padding around it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.data import Canvases

CROP_RATIO = (3 / 4, 4 / 3)
BLUR_SIGMA = (0.1, 2.0)
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
# Its inverse once, on the CPU (an inverse on a GPU would wait for its check); float32 values, exactly.
YIQ_TO_RGB = tuple(map(tuple, torch.linalg.inv(torch.tensor(RGB_TO_YIQ)).tolist()))
# Sampling stops this far (in pixels) short of a valid region's last pixel centre: grid_sample's rounding
# (about canvas side x 1e-7 pixels) must never give the padding beyond it a weight.
EDGE_MARGIN = 1e-3


@dataclass(frozen=True)
class Augmentation:
    crop_scale: tuple[float, float]
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_probability: float
    grayscale_probability: float
    blur_probability: float
    solarize_probability: float = 0.0


NPIDV2 = Augmentation((0.2, 1.0), 0.4, 0.4, 1.0, 0.5, 0.8, 0.0, 0.5)
MOCOV2 = Augmentation((0.2, 1.0), 0.4, 0.4, 0.4, 0.1, 0.8, 0.2, 0.5)
BYOL_VIEWS = (Augmentation((0.08, 1.0), 0.4, 0.4, 0.2, 0.1, 0.8, 0.2, 1.0, 0.0),
              Augmentation((0.08, 1.0), 0.4, 0.4, 0.2, 0.1, 0.8, 0.2, 0.1, 0.2))


@functools.lru_cache(maxsize=None)
def on_device(values: tuple, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A constant on `device`, copied there once per process: on a GPU, a copy from the host's memory makes
    the host wait for every queued kernel, and a step is meant never to wait. Shared: never modify it in place."""
    return torch.tensor(values, device=device, dtype=dtype)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = on_device(tuple(mean), images.device).view(1, -1, 1, 1)
    std = on_device(tuple(std), images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def evaluation_view(images: Canvases, size: int, mean, std) -> torch.Tensor:
    """uint8 batch -> the deterministic normalised input used to extract features.

    A whole canvas is resized to size x size. An image in part of its canvas gives the standard
    evaluation crop: its shorter side resized to the canvas side (load_size), the centred size x size
    square of that (at load_size 256 and size 224, ImageNet's Resize(256) and CenterCrop(224))."""
    x = to_unit_float(images.pixels)
    if images.sizes is not None:
        heights, widths = images.sizes.to(x.dtype).unbind(1)
        side = torch.minimum(heights, widths) * (size / x.shape[-1])  # the crop's side in the image's pixels
        theta = torch.zeros(len(x), 2, 3, device=x.device)
        theta[:, 0, 0] = side / widths
        theta[:, 1, 1] = side / heights
        x = resample_crops(x, theta, size, images.sizes)
    elif x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x, mean, std)


def training_view(images: Canvases, size: int, mean, std, generator: torch.Generator,
                  recipe: Augmentation = NPIDV2) -> torch.Tensor:
    """uint8 batch B x C x H x W (on the training device) -> augmented normalised B x C x size x size."""
    x = random_resized_crop_and_flip(to_unit_float(images.pixels), size, recipe.crop_scale, generator,
                                     images.sizes)
    x = color_jitter(x, recipe, generator)
    if recipe.grayscale_probability > 0:
        x = random_grayscale(x, recipe.grayscale_probability, generator)
    x = gaussian_blur(x, recipe.blur_probability, generator)
    if recipe.solarize_probability > 0:
        x = random_solarize(x, recipe.solarize_probability, generator)
    return normalize(x, mean, std)


def random_resized_crop_and_flip(x: torch.Tensor, size: int, scale: tuple[float, float],
                                 generator: torch.Generator, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """A crop of each image's valid region (`sizes`, B x 2 heights and widths; None: the whole canvas)
    covering a uniform share `scale` of its area at a log-uniform aspect ratio, flipped with p 0.5."""
    n, device = x.shape[0], x.device
    area = _uniform(n, *scale, generator, device)
    aspect = torch.exp(_uniform(n, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator, device))
    region_aspect = 1.0 if sizes is None else sizes[:, 0].to(x.dtype) / sizes[:, 1].to(x.dtype)
    # Crop width and height as fractions of the region's sides; clamped when a tall/wide crop overflows.
    width = torch.sqrt(area * aspect * region_aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect / region_aspect).clamp(max=1.0)
    centre_x = (1 - width) * _uniform(n, -1.0, 1.0, generator, device)
    centre_y = (1 - height) * _uniform(n, -1.0, 1.0, generator, device)
    flip = torch.where(_bernoulli(n, 0.5, generator, device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    return resample_crops(x, theta, size, sizes)


def resample_crops(x: torch.Tensor, theta: torch.Tensor, size: int, sizes: torch.Tensor | None) -> torch.Tensor:
    """Each image's crop resampled bilinearly to size x size. theta (B x 2 x 3) maps the output square onto
    the crop in coordinates normalised to the image's valid region ([-1, 1] spans it; None: the canvas).

    Output pixels near a crop's edge can sample up to half a pixel past the region's last pixel centre;
    they take that pixel's value, as grid_sample's clamping does at the canvas's own edge."""
    n, channels, canvas_height, canvas_width = x.shape
    if sizes is not None:
        canvas = on_device((canvas_width, canvas_height), x.device, x.dtype)
        extent = sizes.flip(1).to(x.dtype)  # (width, height): the grid's (x, y) order
        share = extent / canvas
        theta = theta * share[:, :, None]
        theta[:, :, 2] += share - 1  # the region's top-left corner is the canvas's
    grid = F.affine_grid(theta, [n, channels, size, size], align_corners=False)
    if sizes is not None:
        last = (2 * (extent - 1 - EDGE_MARGIN) + 1) / canvas - 1  # normalised position of the last pixel centre
        grid = torch.minimum(grid, last[:, None, None, :])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, recipe: Augmentation, generator: torch.Generator) -> torch.Tensor:
    n, device = x.shape[0], x.device
    apply = _bernoulli(n, recipe.jitter_probability, generator, device)

    def factor(low: float, high: float, identity: float) -> torch.Tensor:
        values = _uniform(n, low, high, generator, device)
        return torch.where(apply, values, torch.full_like(values, identity)).view(n, 1, 1, 1)

    brightness = factor(1 - recipe.brightness, 1 + recipe.brightness, 1.0)
    contrast = factor(1 - recipe.contrast, 1 + recipe.contrast, 1.0)
    saturation = factor(max(0.0, 1 - recipe.saturation), 1 + recipe.saturation, 1.0)
    hue = factor(-recipe.hue, recipe.hue, 0.0).view(n)

    x = (x * brightness).clamp(0, 1)
    mean_gray = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean_gray) * contrast + mean_gray).clamp(0, 1)
    if x.shape[1] == 3:
        gray = grayscale(x)
        x = ((x - gray) * saturation + gray).clamp(0, 1)
        x = rotate_hue(x, hue).clamp(0, 1)
    return x


def random_grayscale(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    chosen = _bernoulli(x.shape[0], probability, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(chosen, grayscale(x).expand_as(x), x)


def random_solarize(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Invert the pixels at or above half intensity (BYOL's solarisation, threshold 0.5)."""
    chosen = _bernoulli(x.shape[0], probability, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(chosen & (x >= 0.5), 1 - x, x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = on_device(LUMA, x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by `turns` of a full circle: a rotation about the gray axis in YIQ."""
    rgb_to_yiq, yiq_to_rgb = on_device(RGB_TO_YIQ, x.device), on_device(YIQ_TO_RGB, x.device)
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(turns), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    per_image = yiq_to_rgb @ rotation @ rgb_to_yiq  # n x 3 x 3
    return torch.einsum("nij,njhw->nihw", per_image, x)


def gaussian_blur(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    n, channels, height, width = x.shape
    device = x.device
    radius = max(1, round(0.1 * min(height, width)) // 2)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=x.dtype)
    sigma = _uniform(n, *BLUR_SIGMA, generator, device)
    blurred = _bernoulli(n, probability, generator, device)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    identity = (offsets == 0).to(x.dtype).expand(n, -1)
    kernel = torch.where(blurred[:, None], kernel / kernel.sum(1, keepdim=True), identity)
    # One depthwise separable convolution over all images: each image-channel has its own kernel.
    kernel = kernel.repeat_interleave(channels, dim=0)  # (n * channels) x taps
    flat = F.pad(x.reshape(1, n * channels, height, width), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * channels)
    return flat.view(n, channels, height, width)
