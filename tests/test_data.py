import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.image_trees import noise_jpeg_tree
from trainers import data as datasets
from trainers.augment import evaluation_view, training_view
from trainers.config import ConfigError, TrialConfig


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder, n_train=40, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images_file, labels_file = datasets.FASHION_MNIST_FILES[split]
        write_idx(folder / images_file, rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(folder / labels_file, np.arange(n) % 10, 2049)


def test_reads_idx_files_from_data_root(tmp_path):
    fake_fashion_mnist(tmp_path)
    data = datasets.load(TrialConfig.create(data_root=str(tmp_path)))
    assert data.train.images.shape == (40, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test.labels.tolist() == [i % 10 for i in range(20)]
    raw = np.frombuffer(gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()[16:], dtype=np.uint8)
    assert torch.equal(data.train.images.flatten(), torch.from_numpy(raw.copy()))


def test_missing_dataset_names_all_three_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setattr(datasets.Path, "home", lambda: tmp_path)
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", _offline)
    with pytest.raises(datasets.DataError) as error:
        datasets.find_fashion_mnist("")
    message = str(error.value)
    assert "absent" in message and "download" in message and "apt-get" in message and "data_root" in message


def test_explicit_data_root_never_falls_back(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path / "elsewhere")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "elsewhere")
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", _offline)
    with pytest.raises(datasets.DataError, match="empty"):
        datasets.find_fashion_mnist(str(tmp_path / "empty"))


def _offline(*args, **kwargs):
    raise OSError("no network")


def test_a_previous_download_under_data_root_is_found_without_the_network(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw")  # where torchvision's download puts the files
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", _offline)
    assert datasets.find_fashion_mnist(str(tmp_path)) == tmp_path / "FashionMNIST" / "raw"


def test_a_failed_download_removes_the_folders_it_made_and_nothing_else(tmp_path, monkeypatch):
    def interrupted(root, train, download):  # the network fails after the folders and part of a file are made
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise OSError("connection reset")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", interrupted)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(datasets.DataError, match="download"):
        datasets.find_fashion_mnist(str(mine))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setattr(datasets.Path, "home", lambda: home)
    with pytest.raises(datasets.DataError, match="download"):
        datasets.find_fashion_mnist("")
    assert list(home.iterdir()) == []


def test_corrupt_idx_is_a_data_error(tmp_path):
    fake_fashion_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(datasets.DataError, match="cannot read IDX"):
        datasets.load(TrialConfig.create(data_root=str(tmp_path)))


def test_swapped_idx_files_or_unequal_counts_are_data_errors(tmp_path):
    fake_fashion_mnist(tmp_path)
    images_file, labels_file = datasets.FASHION_MNIST_FILES["test"]
    (tmp_path / images_file).rename(tmp_path / "held")
    (tmp_path / labels_file).rename(tmp_path / images_file)
    (tmp_path / "held").rename(tmp_path / labels_file)
    # Swapped, the shapes would still agree: 20 labels read as images, 20 images as labels.
    with pytest.raises(datasets.DataError, match="magic number 2049, expected 2051"):
        datasets.load(TrialConfig.create(data_root=str(tmp_path)))
    fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / labels_file, np.arange(19) % 10, 2049)
    with pytest.raises(datasets.DataError, match="20 images but 19 labels in the test split"):
        datasets.load(TrialConfig.create(data_root=str(tmp_path)))


def test_balanced_subset_keeps_equal_classes_and_is_fixed():
    data = datasets.synthetic(seed=0)
    subset = datasets.balanced_subset(data.train, 200, 10)
    assert torch.bincount(subset.labels).tolist() == [20] * 10
    again = datasets.balanced_subset(data.train, 200, 10)
    assert torch.equal(subset.images, again.images)
    # Each kept image keeps its own label: found among the source images, its label there is the same.
    source = data.train.images.flatten(1)
    matches = []
    for image, label in zip(subset.images.flatten(1), subset.labels):
        (match,) = torch.nonzero((source == image).all(dim=1)).flatten().tolist()
        assert data.train.labels[match] == label
        matches.append(match)
    assert matches == sorted(matches)  # the kept images stay in the split's order
    with pytest.raises(datasets.DataError, match="cannot hold one image of each of 10 classes"):
        datasets.balanced_subset(data.train, 9, 10)


def test_subsets_of_an_image_folder_keep_each_file_under_its_own_class(tmp_path):
    for split, count in (("train", 6), ("test", 4)):
        for cls in ("a", "b", "c"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                (tmp_path / split / cls / f"{i}.png").write_bytes(b"")  # scanned, never decoded here
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(tmp_path), load_size=16,
                                            image_size=16, train_subset=9, test_subset=6))
    for split, subset, per_class in (("train", data.train, 3), ("test", data.test, 2)):
        assert torch.bincount(subset.labels).tolist() == [per_class] * 3
        paths = [Path(path) for path, _ in subset.samples]
        assert paths == sorted(paths) and len(set(paths)) == len(paths)
        for path, label in subset.samples:
            assert Path(path).parent == tmp_path / split / subset.classes[label]


def test_training_batches_follow_their_generator_alone_and_drop_the_partial_batch():
    data = datasets.synthetic(seed=0, train_per_class=3, test_per_class=1)  # 30 training images

    def order(seed):
        loader = datasets.batches(data.train, 8, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [indices.tolist() for _, _, indices in loader]

    torch.manual_seed(1)
    first = order(5)
    torch.manual_seed(2)
    assert order(5) == first  # the global RNG plays no part: a resumed trial sees the same orders
    assert order(6) != first
    assert [len(batch) for batch in first] == [8, 8, 8]  # the last 6 would make a partial batch
    drawn = sum(first, [])
    assert len(set(drawn)) == 24 and drawn != sorted(drawn)
    evaluation = [indices.tolist() for _, _, indices in datasets.evaluation_batches(data.train)]
    assert sum(evaluation, []) == list(range(30))


def test_image_folder_loading(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), colour).save(tmp_path / split / cls / f"{i}.png")
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(tmp_path), load_size=16, image_size=16))
    images, labels, indices = next(iter(datasets.batches(data.train, 6, shuffle=False)))
    assert images.pixels.shape == (6, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.pixels[0, 0].float().mean() == 255 and images.pixels[-1, 2].float().mean() == 255
    assert images.sizes.tolist() == [[16, 16]] * 6


def non_square_tree(root, colour=(200, 120, 160)):
    """Two classes of flat-colour JPEGs, 40 wide x 24 high and 24 wide x 40 high."""
    from PIL import Image

    for split in ("train", "test"):
        for cls, (width, height) in (("wide", (40, 24)), ("tall", (24, 40))):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (width, height), colour).save(root / split / cls / f"{i}.jpg", quality=95)


def test_image_folder_keeps_aspect_ratio_on_a_padded_canvas(tmp_path):
    non_square_tree(tmp_path)
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(tmp_path), load_size=20,
                                            image_size=16))
    images, labels, _ = next(iter(datasets.batches(data.train, 4, shuffle=False)))
    assert labels.tolist() == [0, 0, 1, 1]  # "tall" sorts before "wide"
    # The longer side becomes 20: 24 x 40 -> 12 x 20 and 40 x 24 -> 20 x 12 (height, width).
    assert images.sizes.tolist() == [[20, 12], [20, 12], [12, 20], [12, 20]]
    for canvas, (height, width) in zip(images.pixels, images.sizes.tolist()):
        image = canvas[:, :height, :width].int()
        assert (image - torch.tensor([200, 120, 160]).view(3, 1, 1)).abs().max() <= 4
        padding = canvas.clone()
        padding[:, :height, :width] = 0
        assert padding.eq(0).all()


def coordinate_canvases(regions, side, sentinel=-1000.0):
    """Float canvases whose channel 0 holds each valid pixel's column index and channel 1 its row index;
    everything outside the valid regions (height, width) holds the sentinel."""
    x = torch.full((len(regions), 2, side, side), sentinel)
    for image, (height, width) in zip(x, regions):
        image[0, :height, :width] = torch.arange(width).float()[None, :]
        image[1, :height, :width] = torch.arange(height).float()[:, None]
    return x, torch.tensor(regions)


@pytest.mark.parametrize("regions, side, size", [([(60, 100), (100, 40)], 100, 8),  # crops shrink
                                                 ([(12, 20), (20, 7)], 20, 32)])  # crops grow
def test_random_resized_crops_stay_inside_the_valid_region(regions, side, size):
    from trainers.augment import random_resized_crop_and_flip

    x, sizes = coordinate_canvases(regions * 200, side)
    generator = torch.Generator().manual_seed(0)
    crops = random_resized_crop_and_flip(x, size, (0.08, 1.0), generator, sizes)
    widths, heights = sizes[:, 1].float(), sizes[:, 0].float()
    # Every sample is a convex combination of valid pixels: the sentinel never gets a weight.
    assert crops.amin(dim=(2, 3)).min() >= 0
    assert (crops[:, 0].amax(dim=(1, 2)) <= widths - 1).all() and (crops[:, 1].amax(dim=(1, 2)) <= heights - 1).all()
    # Ignoring the regions, the same crops would read the sentinel: the check above can fail.
    assert random_resized_crop_and_flip(x, size, (0.08, 1.0), torch.Generator().manual_seed(0)).min() < 0


def test_crop_area_and_aspect_are_relative_to_the_valid_region():
    from trainers.augment import CROP_RATIO, random_resized_crop_and_flip

    size = 8
    x, sizes = coordinate_canvases([(60, 100), (100, 40)] * 200, 100)
    crops = random_resized_crop_and_flip(x, size, (0.3, 0.3), torch.Generator().manual_seed(0), sizes)
    # On a linear ramp bilinear sampling is exact: the outer samples lie (size - 1) / size of the crop apart.
    widths = (crops[:, 0, 0, -1] - crops[:, 0, 0, 0]).abs() * size / (size - 1)
    heights = (crops[:, 1, -1, 0] - crops[:, 1, 0, 0]).abs() * size / (size - 1)
    region_area = (sizes[:, 0] * sizes[:, 1]).float()
    assert torch.allclose(widths * heights / region_area, torch.full((len(x),), 0.3), rtol=1e-3)
    aspect = widths / heights
    assert aspect.min() >= CROP_RATIO[0] * (1 - 1e-3) and aspect.max() <= CROP_RATIO[1] * (1 + 1e-3)
    assert aspect.max() > 1.2 and aspect.min() < 0.8  # both orientations drawn, in pixels of the region


def test_evaluation_view_is_the_centre_crop_of_the_valid_region():
    from trainers.augment import evaluation_view

    # A 12 high x 20 wide image on a 20 x 20 canvas, viewed at 10 x 10: its shorter side (12) resized to the
    # canvas side (20) and the centred 10 x 10 taken, i.e. a 6 x 6 square of the image at rows and
    # columns 3..9 and 7..13 (pixel edges); output pixel j samples 0.6 pixels apart from its centre.
    x, sizes = coordinate_canvases([(12, 20)], 20, sentinel=255)
    view = evaluation_view(datasets.Canvases(x.to(torch.uint8), sizes), 10, (0.0, 0.0), (1 / 255, 1 / 255))
    steps = torch.arange(10).float() * 0.6
    assert torch.allclose(view[0, 0], (6.8 + steps)[None, :].expand(10, 10), atol=1e-3)
    assert torch.allclose(view[0, 1], (2.8 + steps)[:, None].expand(10, 10), atol=1e-3)


def test_no_padding_reaches_a_training_view_of_loaded_images(tmp_path):
    from trainers.augment import Augmentation

    non_square_tree(tmp_path, colour=(180, 180, 180))
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(tmp_path), load_size=20,
                                            image_size=16))
    images, _, _ = next(iter(datasets.batches(data.train, 4, shuffle=False)))
    crop_only = Augmentation((0.08, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    repeated = datasets.Canvases(images.pixels.repeat(50, 1, 1, 1), images.sizes.repeat(50, 1))
    view = training_view(repeated, 32, (0.0,) * 3, (1.0,) * 3, torch.Generator().manual_seed(0), crop_only)
    darkest = min(int(canvas[:, :h, :w].min()) for canvas, (h, w) in zip(images.pixels, images.sizes.tolist()))
    assert view.min() >= darkest / 255 - 1e-4  # the padding is 0: any weight on it would darken a pixel


def test_augmentations_are_random_per_image_and_keep_range():
    images = datasets.synthetic(seed=0).train.images[:32]
    generator = torch.Generator().manual_seed(0)
    view = training_view(datasets.Canvases(images), 16, (0.0,), (1.0,), generator)
    assert view.shape == (32, 1, 16, 16) and view.min() >= 0 and view.max() <= 1
    same_image = training_view(datasets.Canvases(images[:1].repeat(8, 1, 1, 1)), 16, (0.0,), (1.0,), generator)
    assert len({tuple(v.flatten().tolist()) for v in same_image}) == 8  # each copy got its own parameters
    assert torch.allclose(evaluation_view(datasets.Canvases(images), 16, (0.0,), (1.0,)), images.float() / 255)


def test_rgb_jitter_keeps_gray_pixels_gray_under_hue_rotation():
    from trainers.augment import rotate_hue

    gray = torch.full((2, 3, 4, 4), 0.4)
    assert torch.allclose(rotate_hue(gray, torch.tensor([0.25, -0.4])), gray, atol=1e-5)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    assert torch.allclose(rotate_hue(red, torch.tensor([1.0])), red, atol=1e-5)  # a full turn is the identity
    # A half turn negates the colour part and keeps the luma: 2 Y - c, with Y = 0.299 for pure red.
    assert torch.allclose(rotate_hue(red, torch.tensor([0.5])).flatten(), torch.tensor([-0.402, 0.598, 0.598]),
                          atol=1e-3)
    # A rotation and its opposite cancel, at any angle (a matrix that is no rotation would not).
    colours = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([0.25, 0.1, -0.3])
    assert torch.allclose(rotate_hue(rotate_hue(colours, turns), -turns), colours, atol=1e-5)


def write_cifar10_batches(folder, per_class_train=3, per_class_test=2, protocol=2):
    """The CIFAR-10 python format: pickled dicts (protocol 2, as the published files), b"data" N x 3072
    uint8 (channel-major 32 x 32 rows), b"labels" a list; five training batches and one test batch. Pixel (c, y, x) of image i holds
    (i + 7 c + 3 y + x) mod 256 (test images count from 1000) so that the layout can be checked."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    channel, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")

    def batch(labels, start):
        data = np.stack([((start + i + 7 * channel + 3 * y + x) % 256).astype(np.uint8).reshape(-1)
                         for i in range(len(labels))])
        return {b"data": data, b"labels": list(labels), b"batch_label": b"made by the test"}

    train_labels = [c for c in range(10) for _ in range(per_class_train)]
    start = 0
    for number, part in enumerate(np.array_split(np.array(train_labels), 5), start=1):
        with open(folder / f"data_batch_{number}", "wb") as f:
            pickle.dump(batch(part.tolist(), start), f, protocol=protocol)
        start += len(part)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch([c for c in range(10) for _ in range(per_class_test)], start=1000), f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_python_batches_load_in_layout(tmp_path, protocol):
    write_cifar10_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path), image_size=32))
    assert (len(data.train), len(data.test), data.num_classes, data.channels) == (30, 20, 10, 3)
    image, label, _ = data.train[torch.tensor([4])]
    assert image.shape == (1, 3, 32, 32) and image.dtype == torch.uint8 and int(label) == 1  # 3 per class
    assert [int(image[0, c, yy, xx]) for c, yy, xx in [(0, 0, 0), (2, 5, 9)]] == [4, (4 + 14 + 15 + 9) % 256]
    assert int(data.test[torch.tensor([0])][0][0, 1, 0, 0]) == (1000 + 7) % 256


def test_cifar10_missing_or_damaged_is_one_clear_error(tmp_path):
    with pytest.raises(datasets.DataError, match="data_root=DIR"):
        datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path), image_size=32))
    write_cifar10_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(datasets.DataError, match="test_batch"):
        datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path), image_size=32))


@pytest.mark.parametrize("labels", [[10], [-1], [0, 1]])  # past the last class, negative, one image two labels
def test_cifar10_labels_out_of_range_or_miscounted_are_a_data_error(tmp_path, labels):
    import pickle

    write_cifar10_batches(tmp_path / "cifar-10-batches-py")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), dtype=np.uint8), b"labels": labels}, f, protocol=2)
    with pytest.raises(datasets.DataError, match="cannot read CIFAR-10 batch .*test_batch"):
        datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path), image_size=32))


def test_cifar10_batches_directly_in_data_root_are_found(tmp_path):
    write_cifar10_batches(tmp_path / "batches")
    data = datasets.load(TrialConfig.create(dataset="cifar10", data_root=str(tmp_path / "batches"), image_size=32))
    assert (len(data.train), len(data.test)) == (30, 20)


def test_image_folder_scan_matches_torchvision_order_and_follows_a_link_once(tmp_path):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = tmp_path / "train"
    for folder in ("b", "a/x-1", "a/x/y", "a"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in ("2.png", "10.jpg", "note.txt"):
            Image.new("RGB", (4, 4)).save(root / folder / name, format="PNG") if name != "note.txt" else \
                (root / folder / name).write_text("not an image")
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "elsewhere" / "3.png")
    (root / "b" / "linked").symlink_to(tmp_path / "elsewhere")  # a link out of the tree: followed, once
    (root / "README.txt").write_text("a file beside the class folders is no class")
    samples, classes = datasets.scan_image_folder(root)
    reference = ImageFolder(str(root))
    assert classes == reference.classes == ["a", "b"]
    assert samples == reference.samples and len(samples) == 4 * 2 + 1  # 2 images in each of 4 folders, 1 linked


def test_full_decode_accepts_whole_images_of_several_formats(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls, suffix in (("a", "jpg"), ("b", "png")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.effect_noise((64, 48), 50).convert("RGB").save(tmp_path / split / cls / f"0.{suffix}")
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(tmp_path), load_size=16,
                                            image_size=16))
    datasets.check_images(datasets.image_files(data))  # raises DataError for a damaged file (the catalogue's cases)
    assert len(data.train) == 2 and data.num_classes == 2


def test_the_image_check_decodes_each_unchanged_file_once(tmp_path, monkeypatch, capsys):
    """A manifest under --storage records the files decoded whole; a later check decodes only new or
    changed ones, and a damaged file is named whatever the record says."""
    from PIL import Image

    from study.safety.preflight import check_image_files

    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.effect_noise((20, 16), 40 + i).convert("RGB").save(root / split / cls / f"{i}.jpg")
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(root), load_size=16, image_size=16))
    decoded = []
    real_check = datasets.check_image
    monkeypatch.setattr(datasets, "check_image",
                        lambda path, jpeg_only=False: decoded.append(path) or real_check(path, jpeg_only))
    storage = tmp_path / "storage"
    check_image_files(data, str(root), storage)
    assert len(decoded) == 12
    decoded.clear()
    check_image_files(data, str(root), storage)
    assert decoded == [] and "checking that 0 of 12 image files decode" in capsys.readouterr().out
    changed = root / "train" / "b" / "1.jpg"
    Image.effect_noise((24, 16), 90).convert("RGB").save(changed)
    check_image_files(data, str(root), storage)
    assert decoded == [str(changed)]
    decoded.clear()
    changed.write_bytes(changed.read_bytes()[:200])  # truncated: the header survives
    with pytest.raises(datasets.DataError, match="1.jpg"):
        check_image_files(data, str(root), storage)
    for manifest in (storage / "image-checks").iterdir():
        manifest.write_text("{not json")  # a damaged record costs a full check, nothing more
    Image.effect_noise((24, 16), 91).convert("RGB").save(changed)
    decoded.clear()
    check_image_files(data, str(root), storage)
    assert len(decoded) == 12


def test_preflight_cost_writes_its_tree_once_and_times_a_full_check_then_a_repeat(tmp_path, capsys):
    from study.measure import preflight_cost

    root = tmp_path / "tree"
    arguments = ["--root", str(root), "--images", "40", "--classes", "2", "--side", "8"]
    assert preflight_cost.main(arguments) == 0
    out = capsys.readouterr().out
    assert "40 image files" in out and "checking that 40 of 40" in out and "checking that 0 of 40" in out
    assert len(list((root / "train").rglob("*.jpg"))) == 36 and len(list((root / "test").rglob("*.jpg"))) == 4
    assert preflight_cost.main(arguments) == 0  # the tree is reused, the manifest starts afresh
    out = capsys.readouterr().out
    assert "wrote" not in out and "checking that 40 of 40" in out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert preflight_cost.main(["--root", str(foreign)]) == 2
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_check_images_in_worker_processes_names_the_first_damaged_file_in_order(tmp_path, monkeypatch):
    """The first chunk's damaged file comes after a large image (about a second to decode), the second
    chunk's comes first: the second chunk fails long before the first, and its error must still wait."""
    from PIL import Image

    paths = []
    for i in range(12):
        path = tmp_path / f"{i:02d}.jpg"
        side = 2000 if i == 0 else 16
        Image.effect_noise((side, side), 50 + i).convert("RGB").save(path)
        paths.append(str(path))
    for damaged in (3, 4):  # the last of chunk 0, the first of chunk 1
        Path(paths[damaged]).write_bytes(Path(paths[damaged]).read_bytes()[:150])
    monkeypatch.setattr(datasets, "PARALLEL_CHECK_MIN_FILES", 0)
    monkeypatch.setattr(datasets, "CHECK_CHUNK_FILES", 4)
    with pytest.raises(datasets.DataError, match="03.jpg"):
        datasets.check_images(paths, workers=2)
    datasets.check_images(paths[:3] + paths[5:], workers=2)


def mixed_jpeg_tree(root):
    """Two classes of noise JPEGs: wider and taller than a 20-pixel load size, one already 20 on its longer
    side, one smaller than it, and a grayscale one; 5 per split."""
    from PIL import Image

    shapes = {"a": [(40, 24), (24, 40), (20, 9)], "b": [(13, 7), (33, 50)]}
    for split in ("train", "test"):
        for cls, sizes in shapes.items():
            (root / split / cls).mkdir(parents=True)
            for i, size in enumerate(sizes):
                image = Image.effect_noise(size, 60 + i).convert("RGB" if (cls, i) != ("b", 1) else "L")
                image.save(root / split / cls / f"{i}.jpg", quality=90)


def test_the_pixel_budget_admits_an_image_of_its_size_and_refuses_one_row_more(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", 24 * 16)
    Image.new("RGB", (24, 16)).save(tmp_path / "at.png")
    Image.new("RGB", (24, 17)).save(tmp_path / "over.png")
    datasets.check_image(str(tmp_path / "at.png"))
    with pytest.raises(datasets.DataError, match=r"over\.png declares 24 x 17 pixels, over the budget"):
        datasets.check_image(str(tmp_path / "over.png"))


def test_decoding_on_the_device_gives_the_canvases_of_the_loader_workers(tmp_path):
    """decode_on_device=true: the loader hands over file bytes and `.to(device)` decodes the batch; on a CPU that
    is the workers' decoder and resize, so the canvases are the same bit for bit, sizes included."""
    mixed_jpeg_tree(tmp_path)
    keys = dict(dataset="imagefolder", data_root=str(tmp_path), load_size=20, image_size=16)
    workers = datasets.load(TrialConfig.create(**keys))
    encoded = datasets.load(TrialConfig.create(**keys, decode_on_device=True))
    assert isinstance(encoded.train, datasets.EncodedImageFolder) and len(encoded.train) == 5
    for split in ("train", "test"):
        # Through loader workers: a batch of file bytes crosses from their processes as one shared buffer.
        decoded_batches = list(datasets.batches(getattr(encoded, split), 3, shuffle=False, num_workers=2))
        worker_batches = list(datasets.batches(getattr(workers, split), 3, shuffle=False))
        assert len(decoded_batches) == len(worker_batches) == 2
        for (files, labels, indices), (canvases, worker_labels, worker_indices) in zip(decoded_batches,
                                                                                        worker_batches):
            assert isinstance(files, datasets.EncodedImages) and len(files) == len(canvases)
            decoded = files.to(torch.device("cpu"))
            assert torch.equal(decoded.pixels, canvases.pixels) and torch.equal(decoded.sizes, canvases.sizes)
            assert torch.equal(labels, worker_labels) and torch.equal(indices, worker_indices)
    # Longer side to 20 (height, width): 24 x 40 -> 12 x 20, 40 x 24 -> 20 x 12, 9 x 20 kept, 7 x 13 -> 11 x 20.
    first = next(iter(datasets.batches(encoded.train, 5, shuffle=False)))[0].to("cpu")
    assert first.sizes.tolist() == [[12, 20], [20, 12], [9, 20], [11, 20], [20, 13]]
    assert first.pixels[3, :, 11:].eq(0).all() and first.pixels[4, :, :, 13:].eq(0).all()  # padding stays 0
    gray = first.pixels[4, :, :20, :13]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])  # a grayscale JPEG decodes to RGB


def test_decoding_on_the_device_needs_a_tree_of_jpegs_and_checks_it_as_such(tmp_path):
    """A PNG passes the ordinary image check but is refused, by name and in one line, for decode_on_device;
    a tree checked for the workers' decoder is checked again as JPEGs (its own record)."""
    from PIL import Image

    from study.safety.preflight import check_image_files

    mixed_jpeg_tree(tmp_path / "data")
    png = tmp_path / "data" / "train" / "b" / "2.png"
    Image.effect_noise((16, 16), 5).convert("RGB").save(png)
    keys = dict(dataset="imagefolder", data_root=str(tmp_path / "data"), load_size=20, image_size=16)
    storage = tmp_path / "storage"
    check_image_files(datasets.load(TrialConfig.create(**keys)), keys["data_root"], storage)
    with pytest.raises(datasets.DataError, match=r"2\.png is a PNG, not a JPEG.*study\.prepare"):
        check_image_files(datasets.load(TrialConfig.create(**keys, decode_on_device=True)), keys["data_root"],
                          storage, jpeg_only=True)
    png.unlink()
    check_image_files(datasets.load(TrialConfig.create(**keys, decode_on_device=True)), keys["data_root"], storage,
                      jpeg_only=True)
    assert len(list((storage / "image-checks").iterdir())) == 2


def test_the_jpeg_check_refuses_cmyk_and_accepts_a_multi_picture_jpeg(tmp_path):
    """torchvision's GPU decoder converts no CMYK (the workers' decoder does); an MPO is a JPEG with more pictures
    after the first, which both decoders read."""
    from PIL import Image

    cmyk, mpo = tmp_path / "cmyk.jpg", tmp_path / "mpo.jpg"
    Image.effect_noise((24, 16), 50).convert("CMYK").save(cmyk)
    Image.effect_noise((24, 16), 50).convert("RGB").save(mpo, format="MPO", save_all=True,
                                                          append_images=[Image.new("RGB", (24, 16))])
    datasets.check_image(str(cmyk))
    with pytest.raises(datasets.DataError, match=r"cmyk\.jpg is a CMYK JPEG, which decode_on_device=true cannot"):
        datasets.check_image(str(cmyk), jpeg_only=True)
    datasets.check_image(str(mpo), jpeg_only=True)


def test_decoding_on_a_gpu_first_waits_for_the_work_queued_on_its_stream(monkeypatch):
    """nvJPEG's hardware decoder may write into memory that queued kernels still read; forced through on a CPU
    with a stand-in stream."""
    waited = []

    class Stream:
        def synchronize(self):
            waited.append(True)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: Stream())
    datasets.drain_before_decoding(torch.device("cpu"))
    assert waited == []
    datasets.drain_before_decoding(torch.device("cuda", 0))
    assert waited == [True]


def test_decode_on_device_is_refused_for_data_held_in_memory():
    with pytest.raises(ConfigError, match="decode_on_device=true decodes image files, but dataset=fashion-mnist"):
        TrialConfig.create(decode_on_device=True)


def test_a_trial_that_decodes_on_its_device_computes_what_the_loader_workers_path_does(tmp_path):
    """Every pass of a trial (batch-norm calibration, the bank's embeddings, training steps, evaluations) takes
    its images through `.to(device)`, so on a CPU both paths give the same rows bit for bit."""
    from trainers.fit import fit

    noise_jpeg_tree(tmp_path, train_per_class=16, test_per_class=8)
    config = TrialConfig.create(method="npidv2", dataset="imagefolder", data_root=str(tmp_path), load_size=20,
                                image_size=16, cnn_width=8, head_hidden=32, embedding_dim=16, batch_size=8,
                                epochs=2, num_negatives=8, svm_train_size=32, probe_epochs=2, knn_k=5, threads=1)

    class Keep:
        state = None

        def restore(self, config_hash):
            return None

        def report(self, row, state):
            pass

    def metrics(rows):  # what the trial computed: not its timings or memory; NaN (epochs not evaluated) as None
        return [{k: None if v != v else v for k, v in row.items() if not k.endswith(("time_s", "memory_mb"))}
                for row in rows]

    workers, on_device = fit(config, Keep()), fit(config.replace(decode_on_device=True), Keep())
    assert len(workers) == 3 and metrics(workers) == metrics(on_device)
    assert workers[-1]["loss"] > 0
