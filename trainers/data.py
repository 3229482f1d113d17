"""Datasets as uint8 image tensors: Fashion-MNIST, CIFAR-10, ImageFolder trees, and a synthetic set for tests.

Every dataset's batches are `(Canvases, labels B, indices B)` (with decode_on_device, `EncodedImages`, which
become Canvases when moved to the device; on a rank of a trial over several, `RankShare`, which becomes the
whole batch's Canvases when moved to the device); augmentation happens on whole batches
on the training device (trainers.augment), so loading stays cheap. An ImageFolder image keeps its
aspect ratio: resized so that its longer side is `load_size`, it sits at the top-left of a
`load_size` square canvas, and its valid height and width travel with it, so crops are taken from
the image as it was, never from the padding. The in-memory sets fill their canvases.
Labels are used only for evaluation and analysis, never for training.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
)

from trainers.distributed import Ranks

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_FOLDER = "cifar-10-batches-py"  # what torchvision's CIFAR10(root, download=True) unpacks under root
SUBSET_SEED = 0  # fixed so every trial of every seed sees the same images
EVALUATION_BATCH = 128  # images per batch when features are extracted


class DataError(RuntimeError):
    """Data that cannot be found or read; the message names the problem and the fix."""


@dataclass(frozen=True)
class Canvases:
    """A batch of uint8 images, each at the top-left of its square canvas: `pixels` B x C x S x S and
    `sizes` B x 2, each image's valid (height, width); None when every image fills its canvas."""

    pixels: torch.Tensor
    sizes: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    def to(self, device, non_blocking: bool = False) -> "Canvases":
        sizes = None if self.sizes is None else self.sizes.to(device, non_blocking=non_blocking)
        return Canvases(self.pixels.to(device, non_blocking=non_blocking), sizes)

    def pin_memory(self) -> "Canvases":
        """Called by a DataLoader with pin_memory=True, so the copy to the GPU can overlap compute."""
        return Canvases(self.pixels.pin_memory(), None if self.sizes is None else self.sizes.pin_memory())


class InMemoryImages(Dataset):
    """A whole split held as one uint8 tensor; indexed by a list of indices to give a batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        index = torch.as_tensor(index)
        return self.images[index], self.labels[index], index


class ImageFolderImages(Dataset):
    """`root/<class>/<image>` files, decoded with torchvision.io; item i is (canvas uint8 3 x load_size x
    load_size, valid (height, width), label, i), the image resized so its longer side is load_size."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], load_size: int):
        self.samples, self.classes, self.load_size = samples, classes, load_size
        self.labels = torch.tensor([label for _, label in samples])

    @classmethod
    def from_root(cls, root: Path, load_size: int) -> "ImageFolderImages":
        samples, classes = scan_image_folder(root)
        return cls(samples, classes, load_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        canvas = torch.zeros(3, self.load_size, self.load_size, dtype=torch.uint8)
        size = paste(canvas, fit_longer_side(read_image(path), self.load_size))
        return canvas, torch.tensor(size), label, index


class EncodedImageFolder(ImageFolderImages):
    """The same files as ImageFolderImages, but item i is (the file's bytes, label, i): loader workers only read
    files, and the trial decodes each batch on its own device (`decode_on_device=true`; EncodedImages.to).
    Every file must be a JPEG, which the check before launch makes sure of."""

    def __getitem__(self, index: int):
        from torchvision.io import read_file

        path, label = self.samples[index]
        return read_file(path), label, index


@dataclass(frozen=True)
class EncodedImages:
    """A batch of B JPEG files' bytes in host memory: `data`, their concatenation (uint8, one tensor, so that a
    loader worker hands over one shared buffer rather than B), and `lengths`, each file's. Moving it to a
    device decodes it there in one batched call (nvJPEG on a GPU, libjpeg-turbo on a CPU) and gives the Canvases that
    ImageFolderImages' workers would have made: each image resized so that its longer side is load_size, at
    the top-left of its canvas. On a CPU the pixels are those of the workers' path bit for bit (the same
    decoder and resize); on a GPU nvJPEG's inverse DCT and the resize's float path may move a pixel by a level
    or two (study.measure.smoke measures it)."""

    data: torch.Tensor
    lengths: list
    load_size: int

    def __len__(self) -> int:
        return len(self.lengths)

    def pin_memory(self) -> "EncodedImages":
        return self  # the decoder reads the bytes from host memory itself

    def to(self, device, non_blocking: bool = False) -> Canvases:
        from torchvision.io import ImageReadMode, decode_jpeg

        device = torch.device(device)
        drain_before_decoding(device)
        images = decode_jpeg(list(self.data.split(self.lengths)), mode=ImageReadMode.RGB, device=device)
        pixels = torch.zeros(len(images), 3, self.load_size, self.load_size, dtype=torch.uint8, device=device)
        # The sizes come from the images' shapes, known on the host.
        sizes = [paste(canvas, fit_longer_side(image, self.load_size)) for canvas, image in zip(pixels, images)]
        return Canvases(pixels, torch.tensor(sizes).to(device, non_blocking=non_blocking))


@dataclass(frozen=True)
class RankShare:
    """A batch of B images of a trial over several ranks, of which this rank's loader read and decoded only its
    share: the rows `torch.tensor_split` gives the rank (`local`: Canvases, or EncodedImages with
    decode_on_device). Moving it to the device decodes the share there if it is encoded and gathers the whole
    batch's Canvases from all ranks, so every rank goes on with the batch one process would have loaded, bit
    for bit (a decoded image does not depend on which process decoded it), while each rank's loader workers
    decode only B / ranks images. The same all-gather of the inputs that MoCo's reference code makes for its
    Shuffle BN, here for every batch: uint8 canvases, 50 MB for 256 ImageNet images at load_size 256."""

    local: Canvases | EncodedImages
    ranks: Ranks
    batch: int  # B, the whole batch's size

    def __len__(self) -> int:
        return self.batch

    def pin_memory(self) -> "RankShare":
        return RankShare(self.local.pin_memory(), self.ranks, self.batch)

    def to(self, device, non_blocking: bool = False) -> Canvases:
        local = self.local.to(device, non_blocking=non_blocking)
        return Canvases(self.ranks.gather(local.pixels, self.batch), self.ranks.gather(local.sizes, self.batch))


class ShareOfEachBatch(Dataset):
    """An image folder as one rank of a trial over several reads it: of each batch of indices, only the rank's
    share is read (and, unless encoded, decoded); the labels and indices are the whole batch's."""

    def __init__(self, dataset: ImageFolderImages, ranks: Ranks):
        self.dataset, self.ranks = dataset, ranks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> tuple:
        """What the loader's collate receives for a batch of dataset indices: (this rank's samples, labels B,
        indices B)."""
        samples = [self.dataset[index] for index in indices[self.ranks.rows(len(indices))]]
        return samples, self.dataset.labels[indices], torch.tensor(indices)


def _rank_share_of(batch: tuple, ranks: Ranks, load_size: int, encoded: bool) -> tuple:
    samples, labels, indices = batch
    if not samples:  # a batch smaller than the ranks (an evaluation's last): this rank has no image of it
        pixels = torch.zeros(0, 3, load_size, load_size, dtype=torch.uint8)
        local = Canvases(pixels, torch.zeros(0, 2, dtype=torch.long))
    else:
        local = (_encoded_of(samples, load_size) if encoded else _canvases_of(samples))[0]
    return RankShare(local, ranks, len(indices)), labels, indices


def drain_before_decoding(device: torch.device) -> None:
    """On a GPU, wait for the work queued on the current stream before nvJPEG decodes: its hardware decoder
    writes into memory the caching allocator may have just handed back from tensors that queued kernels still
    read (pytorch/vision PR 9606, closed unmerged; torchcodec PR 1634 adds this same wait). The batched decode
    waits for the device before it returns anyway, so this moves a wait earlier rather than adding one."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def paste(canvas: torch.Tensor, image: torch.Tensor) -> tuple[int, int]:
    """Put a 3 x h x w image at the top-left of its 3 x S x S canvas (zeros elsewhere); returns (h, w)."""
    canvas[:, :image.shape[1], :image.shape[2]] = image
    return image.shape[1], image.shape[2]


def fit_longer_side(image: torch.Tensor, load_size: int) -> torch.Tensor:
    """uint8 3 x H x W resized (antialiased) so that its longer side is load_size; unchanged when it already
    is, as in a tree that `study.prepare` wrote at this load_size."""
    from torchvision.transforms.v2.functional import resize

    height, width = image.shape[1:]
    scale = load_size / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return image if size == (height, width) else resize(image, list(size), antialias=True)


def read_image(path: str) -> torch.Tensor:
    """An image file decoded by torchvision.io (JPEG, PNG, GIF, WebP) as uint8 3 x H x W (an animation's first
    frame); raises DataError."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(path, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:  # what torchvision.io raises for damaged or unknown files
        raise DataError(_unreadable_image(path, error)) from None
    return image[0] if image.dim() == 4 else image  # an animated GIF decodes to frames: its first one


# 64 megapixels, 5 times ImageNet's largest training image: one decoded RGB image of this size is 192 MB.
MAX_IMAGE_PIXELS = 8000 * 8000
# What torchvision.io, the trials' decoder, reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")


def scan_image_folder(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) of every image under root/<class>/, in torchvision ImageFolder's order, and
    the sorted class names. Links are followed once: a folder reached twice (a link back up the tree,
    or into another class) or a file reached by two paths is refused, since it would repeat images,
    possibly under the wrong class."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders; put each class's images in {root}/<class>/")
    folders_seen: dict[str, str] = {}
    files_seen: dict[str, str] = {}
    samples = []
    for label, name in enumerate(classes):
        found = []
        for folder, subfolders, files in os.walk(root / name, followlinks=True):
            real = os.path.realpath(folder)
            if real in folders_seen:
                raise DataError(f"{folder} is {folders_seen[real]} again, through a symbolic link (a loop or a "
                                f"duplicate); remove the link")
            folders_seen[real] = folder
            found += [os.path.join(folder, file) for file in files if file.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)}); add its "
                            f"images or remove the folder")
        for path in sorted(found, key=lambda p: (os.path.dirname(p), os.path.basename(p))):
            real = os.path.realpath(path)
            if real in files_seen:
                raise DataError(f"{path} is the same file as {files_seen[real]} (a link); remove one of them")
            files_seen[real] = path
            samples.append((path, label))
    return samples, classes


def _unreadable_image(path: str, error: Exception) -> str:
    return f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace the file"


def _too_large(path: str, width: int | None, height: int | None) -> str:
    size = f"declares {width} x {height} pixels" if width else "declares too many pixels"
    return (f"image {path} {size}, over the budget of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; downscale it or "
            f"remove it")


@dataclass
class ImageData:
    train: Dataset
    test: Dataset
    num_classes: int
    channels: int
    mean: tuple[float, ...]  # per-channel, in [0, 1] units, for input normalisation
    std: tuple[float, ...]

    def train_labels(self) -> torch.Tensor:
        return self.train.labels

    def test_labels(self) -> torch.Tensor:
        return self.test.labels


def image_files(data: ImageData) -> list[str]:
    """The image files a dataset reads (train, then test); none for in-memory sets, already decoded."""
    return [path for split in (data.train, data.test) if isinstance(split, ImageFolderImages)
            for path, _ in split.samples]


def check_image_header(path: str, jpeg_only: bool = False) -> None:
    """The file's header names a size within the pixel budget (and with `jpeg_only`, a JPEG), read before
    anything is decoded; raises DataError."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(_too_large(path, image.width, image.height))
            if jpeg_only and image.format not in ("JPEG", "MPO"):  # MPO: a JPEG with more pictures after it
                raise DataError(f"image {path} is a {image.format}, not a JPEG, and decode_on_device=true decodes "
                                f"JPEGs only; convert the tree with study.prepare (it writes RGB JPEGs) or set "
                                f"decode_on_device=false")
            if jpeg_only and image.mode not in ("RGB", "L"):  # torchvision's GPU decoder converts no CMYK
                raise DataError(f"image {path} is a {image.mode} JPEG, which decode_on_device=true cannot decode on a "
                                f"GPU; convert the tree with study.prepare (it writes RGB JPEGs) or set "
                                f"decode_on_device=false")
    except Image.DecompressionBombError:  # PIL's own limit, checked on opening
        raise DataError(_too_large(path, None, None)) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decoders raise all three
        raise DataError(_unreadable_image(path, error)) from None


def check_image(path: str, jpeg_only: bool = False) -> None:
    """Decode one file whole (a truncated JPEG has an intact header) within the pixel budget, so a damaged
    tree fails before a run rather than a trial hours in; raises DataError. `jpeg_only`: the file must be a
    JPEG that the batched JPEG decoder of decode_on_device reads."""
    check_image_header(path, jpeg_only)
    if not jpeg_only:
        read_image(path)  # then the whole file, by the decoder the trials use
        return
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        decode_jpeg(read_file(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        raise DataError(_unreadable_image(path, error)) from None


# Files one worker process checks per task, and the fewest files worth starting worker processes for: a
# spawned worker takes a few seconds to import torch, in which one process checks ~15,000 32 x 32 JPEGs
# (0.24 ms each on a 2-core AMD EPYC; an ImageNet JPEG takes ten times longer).
CHECK_CHUNK_FILES = 500
PARALLEL_CHECK_MIN_FILES = 20000


def check_image_chunk(paths: list[str], jpeg_only: bool = False) -> None:
    for path in paths:
        check_image(path, jpeg_only)


def check_images(paths: list[str], workers: int = 1, jpeg_only: bool = False) -> None:
    """check_image for every path, in chunks over `workers` spawned processes; raises the DataError of
    the first damaged file in `paths` order. Processes, not threads: on small files the per-file Python
    work holds the GIL. 90,900 32 x 32 JPEGs on a 2-core AMD EPYC: one process 24.2 s, two 15.8 s; two
    threads took 1.8x as long as one."""
    if workers <= 1 or len(paths) < PARALLEL_CHECK_MIN_FILES:
        check_image_chunk(paths, jpeg_only)
        return
    chunks = [paths[start:start + CHECK_CHUNK_FILES] for start in range(0, len(paths), CHECK_CHUNK_FILES)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(partial(check_image_chunk, jpeg_only=jpeg_only), chunks):  # re-raises in chunk order
            pass


def load(config) -> ImageData:
    """The dataset a TrialConfig names, with its class-balanced subsets applied."""
    if config.dataset == "fashion-mnist":
        root = find_fashion_mnist(config.data_root)
        train = InMemoryImages(*read_idx_pair(root, "train"))
        test = InMemoryImages(*read_idx_pair(root, "test"))
        data = ImageData(train, test, 10, 1, (0.2860,), (0.3530,))
    elif config.dataset == "cifar10":
        root = find_cifar10(config.data_root)
        train, test = (InMemoryImages(*read_cifar10_batches(root, CIFAR10_FILES[split])) for split in ("train", "test"))
        data = ImageData(train, test, 10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    elif config.dataset == "imagefolder":
        data = load_image_folder(config.data_root, config.load_size, encoded=config.decode_on_device)
    else:
        data = synthetic(seed=SUBSET_SEED)
    data.train = balanced_subset(data.train, config.train_subset, data.num_classes)
    data.test = balanced_subset(data.test, config.test_subset, data.num_classes)
    return data


def find_fashion_mnist(data_root: str) -> Path:
    """--set data_root=DIR if given (nothing else is tried then), else the Debian package's location;
    failing that, a torchvision download into data_root or a cache folder."""
    candidates = [Path(data_root)] if data_root else [DEBIAN_FASHION_MNIST]
    for path in candidates:
        for folder in (path, path / "FashionMNIST" / "raw"):
            if all((folder / name).exists() for pair in FASHION_MNIST_FILES.values() for name in pair):
                return folder
    download_root = Path(data_root) if data_root else Path.home() / ".cache" / "interclr-harness"
    raw = download_root / "FashionMNIST" / "raw"
    made = [p for p in reversed([raw, *raw.parents]) if not p.exists()]  # outermost first
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(download_root), train=True, download=True)
        FashionMNIST(str(download_root), train=False, download=True)
        return download_root / "FashionMNIST" / "raw"
    except Exception as error:  # no network, no disk: the message below says what to do
        if made:  # a failed lookup leaves no folders behind; all under the first one is the download's
            shutil.rmtree(made[0], ignore_errors=True)
        raise DataError(
            f"Fashion-MNIST not found in {candidates[0]} and the torchvision download to {download_root} failed "
            f"({type(error).__name__}); fix: `apt-get install dataset-fashion-mnist` (installs to "
            f"{DEBIAN_FASHION_MNIST}), or --set data_root=DIR holding the four IDX .gz files, or run once online"
        ) from None


def find_cifar10(data_root: str) -> Path:
    """The folder of the standard CIFAR-10 python batches: data_root itself or data_root/cifar-10-batches-py.
    Nothing is downloaded: a trial on a cluster node must not fetch data by itself."""
    needed = [name for names in CIFAR10_FILES.values() for name in names]
    for folder in (Path(data_root), Path(data_root) / CIFAR10_FOLDER) if data_root else ():
        if all((folder / name).is_file() for name in needed):
            return folder
    raise DataError(f"CIFAR-10 python batches ({', '.join(needed)}) not found in {data_root or '(no data_root)'} or "
                    f"its {CIFAR10_FOLDER}/; fix: --set data_root=DIR holding them, e.g. after "
                    f"`python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\"`")


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else: dicts, lists, bytes, str and numbers are built in, and
    the only globals allowed are those that rebuild a numpy array, and the string encoder through which
    Python 3 writes bytes at protocol 2, so a crafted file cannot run code."""
    ALLOWED = {("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def read_cifar10_batches(root: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N x 3 x 32 x 32 uint8 and labels N from CIFAR-10 python batches (pickled dicts whose b"data" is
    N x 3072 uint8, channel-major rows of 32 x 32, and b"labels" a list of class indices)."""
    images, labels = [], []
    for name in names:
        path = root / name
        try:
            with open(path, "rb") as f:
                batch = BatchUnpickler(f, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            targets = np.asarray(batch[b"labels"], dtype=np.int64)
            if len(data) != len(targets) or targets.min() < 0 or targets.max() > 9:
                raise ValueError(f"{len(data)} images, {len(targets)} labels in [{targets.min()}, {targets.max()}]")
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
            raise DataError(f"cannot read CIFAR-10 batch {path} ({type(error).__name__}: {error}); "
                            f"re-download the dataset") from None
        images.append(torch.from_numpy(data))
        labels.append(torch.from_numpy(targets))
    return torch.cat(images), torch.cat(labels)


def read_idx_pair(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_file, labels_file = FASHION_MNIST_FILES[split]
    images = read_idx(root / images_file, expected_magic=2051)
    labels = read_idx(root / labels_file, expected_magic=2049)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split; "
                        f"re-install the dataset")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dimension sizes, then uint8 data."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[0:4], "big")
        if magic != expected_magic:
            raise ValueError(f"magic number {magic}, expected {expected_magic}")
        ndim = raw[3]
        shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}; re-download or re-install the dataset") from None


def load_image_folder(data_root: str, load_size: int, encoded: bool = False) -> ImageData:
    """The train/ and test/ trees of data_root; `encoded`: as file bytes that the trial decodes on its device."""
    root = Path(data_root)
    if not data_root or not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"imagefolder needs data_root with train/<class>/ and test/<class>/ folders "
                        f"(got {data_root!r}); fix: --set data_root=DIR")
    images = EncodedImageFolder if encoded else ImageFolderImages
    train, test = images.from_root(root / "train", load_size), images.from_root(root / "test", load_size)
    if train.classes != test.classes:
        raise DataError(f"{root}: train and test class folders differ; make them the same")
    if len(train.classes) < 2:
        raise DataError(f"{root} has {len(train.classes)} class folder; the evaluation's classifiers need at "
                        f"least 2 classes in train/ and test/")
    # ImageNet statistics: the usual choice for natural RGB images at every scale.
    return ImageData(train, test, len(train.classes), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def synthetic(seed: int, train_per_class: int = 60, test_per_class: int = 20, size: int = 16,
              num_classes: int = 10) -> ImageData:
    """Small deterministic grayscale images whose class sets a stripe orientation and frequency.

    Classes differ in structure a CNN can learn under crops, flips and blur, so the test suite can
    check that training improves features without any download.
    """
    generator = torch.Generator().manual_seed(seed)

    def make(per_class: int) -> InMemoryImages:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        angle = labels.float() * (torch.pi / num_classes)
        frequency = 0.25 + 0.35 * (labels % 3).float()
        phase = torch.rand(len(labels), generator=generator) * 2 * torch.pi
        ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
        along = xs[None] * torch.cos(angle)[:, None, None] + ys[None] * torch.sin(angle)[:, None, None]
        pattern = torch.sin(frequency[:, None, None] * along + phase[:, None, None])
        noise = 0.3 * torch.randn(len(labels), size, size, generator=generator)
        images = ((pattern + noise).clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8)
        return InMemoryImages(images.unsqueeze(1), labels)

    return ImageData(make(train_per_class), make(test_per_class), num_classes, 1, (0.5,), (0.35,))


def balanced_indices(labels: torch.Tensor, size: int, num_classes: int) -> torch.Tensor:
    """Sorted positions of the first size/num_classes samples of each class in a fixed shuffle."""
    if size < num_classes:
        raise DataError(f"a subset of {size} cannot hold one image of each of {num_classes} classes; raise it")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))
    shuffled = labels[order]
    per_class = size // num_classes
    return torch.cat([order[shuffled == c][:per_class] for c in range(num_classes)]).sort().values


def balanced_subset(dataset: Dataset, size: int, num_classes: int) -> Dataset:
    """The first size/num_classes images of each class in a fixed shuffle; 0 keeps everything."""
    if size == 0 or size >= len(dataset):
        return dataset
    keep = balanced_indices(dataset.labels, size, num_classes)
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images[keep], dataset.labels[keep])
    return type(dataset)([dataset.samples[i] for i in keep.tolist()], dataset.classes, dataset.load_size)


def batches(dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
            num_workers: int = 0, ranks: Ranks | None = None) -> DataLoader:
    """Batches of (Canvases, EncodedImages or RankShare, labels, indices); training drops the last partial batch.

    Each pass over a shuffled loader draws its order from `generator` alone, so one loader can serve a
    whole trial and a resumed trial, its generator restored, sees the same orders. ImageFolder loaders
    with workers keep them across passes; on a rank of a trial over several (`ranks`) they read only the
    rank's share of each batch (RankShare). On a GPU machine batches arrive in pinned memory, so that the step's
    non_blocking copies to the device do not wait."""
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    if isinstance(dataset, InMemoryImages):
        return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=shuffle), batch_size=None,
                          collate_fn=_whole_canvases, pin_memory=torch.cuda.is_available())
    # The loader's own generator only seeds the workers' RNGs, which decoding never uses; drawn from the
    # order generator it would shift the orders, since persistent workers draw it on the first pass only.
    encoded = isinstance(dataset, EncodedImageFolder)
    collate = partial(_encoded_of, load_size=dataset.load_size) if encoded else _canvases_of
    if ranks is not None and ranks.world > 1:
        collate = partial(_rank_share_of, ranks=ranks, load_size=dataset.load_size, encoded=encoded)
        dataset = ShareOfEachBatch(dataset, ranks)
    return DataLoader(dataset, batch_sampler=BatchSampler(order, batch_size, drop_last=shuffle),
                      collate_fn=collate, num_workers=num_workers, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(0), pin_memory=torch.cuda.is_available())


def evaluation_batches(dataset: Dataset, num_workers: int = 0, ranks: Ranks | None = None) -> DataLoader:
    """Every image once, in dataset order, to extract features from."""
    return batches(dataset, EVALUATION_BATCH, shuffle=False, num_workers=num_workers, ranks=ranks)


def _whole_canvases(batch: tuple) -> tuple:
    images, labels, indices = batch
    return Canvases(images), labels, indices


def _canvases_of(samples: list[tuple]) -> tuple:
    pixels, sizes, labels, indices = default_collate(samples)
    return Canvases(pixels, sizes), labels, indices


def _encoded_of(samples: list[tuple], load_size: int) -> tuple:
    files, labels, indices = zip(*samples)
    return (EncodedImages(torch.cat(files), [len(file) for file in files], load_size), torch.tensor(labels),
            torch.tensor(indices))
