"""`python -m study.prepare SRC DST --load-size N`: the copy holds each image as the loader would resize it,
so loading the copy gives the same sizes and (up to JPEG's error) the same pixels; reruns skip what is
done; the copy never leaves DST."""

import json
import os

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

from study.prepare import main
from trainers.data import ImageFolderImages, load_image_folder, read_image

SIZES = {"a": [(40, 30), (21, 50)], "b": [(16, 16), (64, 9)]}  # (height, width)


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A colour gradient: JPEG keeps such images within a few levels."""
    y = torch.linspace(0, 1, height).view(1, -1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, -1)
    colour = torch.tensor([0.2 + 0.1 * seed, 0.5, 0.8]).view(3, 1, 1)
    return (255 * (colour * y + (1 - colour) * x)).round().to(torch.uint8)


@pytest.fixture()
def tree(tmp_path):
    source = tmp_path / "source"
    for split in ("train", "test"):
        for label, sizes in SIZES.items():
            folder = source / split / label
            folder.mkdir(parents=True)
            for i, (height, width) in enumerate(sizes):
                image = smooth_image(height, width, i)
                if i % 2:
                    (folder / f"{i}.png").write_bytes(encode_png(image).numpy().tobytes())
                else:
                    (folder / f"{i}.JPEG").write_bytes(encode_jpeg(image, quality=98).numpy().tobytes())
    return source


def test_the_copy_loads_as_the_original_does_and_a_rerun_skips_it(tree, tmp_path, capsys):
    target = tmp_path / "prepared"
    assert main([str(tree), str(target), "--load-size", "16", "--workers", "2"]) == 0
    assert "wrote 8 images" in capsys.readouterr().out
    for split in ("train", "test"):
        original = ImageFolderImages.from_root(tree / split, 16)
        prepared = ImageFolderImages.from_root(target / split, 16)
        assert prepared.classes == original.classes and len(prepared) == len(original) == 4
        for i in range(4):
            canvas, size, label, _ = original[i]
            canvas_p, size_p, label_p, _ = prepared[i]
            assert torch.equal(size, size_p) and label == label_p and max(size.tolist()) == 16
            assert (canvas.float() - canvas_p.float()).abs().mean() < 3.0  # JPEG's error on a gradient
    assert load_image_folder(str(target), 16).num_classes == 2
    assert main([str(tree), str(target), "--load-size", "16"]) == 0
    rerun = capsys.readouterr().out
    assert "wrote 0 images" in rerun and "(8 already there)" in rerun
    # Another size into the same folder would keep the 16-pixel images: refused.
    assert main([str(tree), str(target), "--load-size", "32"]) == 2
    assert "prepared as {'load_size': 16" in capsys.readouterr().err


def test_overlapping_trees_name_collisions_and_links_out_are_refused_in_one_line(tree, tmp_path, capsys):
    assert main([str(tree), str(tree / "train" / "copy"), "--load-size", "16"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main([str(tree), str(tmp_path), "--load-size", "16"]) == 2  # the source inside the target
    assert "overlap" in capsys.readouterr().err
    (tree / "train" / "a" / "0.png").write_bytes((tree / "train" / "a" / "1.png").read_bytes())  # beside 0.JPEG
    assert main([str(tree), str(tmp_path / "t1"), "--load-size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "rename one" in err
    os.remove(tree / "train" / "a" / "0.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t2"
    (target / "train").mkdir(parents=True)
    (target / "train" / "a").symlink_to(outside)
    assert main([str(tree), str(target), "--load-size", "16"]) == 2
    assert "through a link" in capsys.readouterr().err and list(outside.iterdir()) == []
    split_linked = tmp_path / "t4"
    split_linked.mkdir()
    (split_linked / "train").symlink_to(outside)  # a link one level up: nothing may be made through it
    assert main([str(tree), str(split_linked), "--load-size", "16"]) == 2
    assert "through a link" in capsys.readouterr().err and list(outside.iterdir()) == []
    record_linked = tmp_path / "t5"
    record_linked.mkdir()
    (tmp_path / "record.json").write_text(json.dumps({"load_size": 16, "jpeg_quality": 95}))
    (record_linked / "PREPARED.json").symlink_to(tmp_path / "record.json")
    assert main([str(tree), str(record_linked), "--load-size", "16"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main([str(tree), str(tmp_path / "t3"), "--load-size", "3"]) == 2
    assert main([str(tree), str(tmp_path / "t3"), "--load-size", "16", "--workers", "0"]) == 2


def test_a_link_at_an_image_of_the_copy_is_replaced_and_what_it_pointed_to_is_untouched(tree, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"not yours")
    target = tmp_path / "prepared"
    (target / "train" / "a").mkdir(parents=True)
    (target / "train" / "a" / "0.jpg").symlink_to(outside)  # newer than its source: a plain file would be kept
    assert main([str(tree), str(target), "--load-size", "16"]) == 0
    written = target / "train" / "a" / "0.jpg"
    assert outside.read_bytes() == b"not yours"
    assert not written.is_symlink() and read_image(str(written)).shape == (3, 16, 12)  # 40 x 30 at 16


def test_a_rerun_rewrites_an_image_whose_source_changed_and_refuses_a_damaged_record(tree, tmp_path, capsys):
    target = tmp_path / "prepared"
    assert main([str(tree), str(target), "--load-size", "16"]) == 0
    source = tree / "train" / "b" / "0.JPEG"
    source.write_bytes(encode_jpeg(smooth_image(8, 32, 0), quality=98).numpy().tobytes())
    later = (target / "train" / "b" / "0.jpg").stat().st_mtime + 10  # clear of coarse file-system timestamps
    os.utime(source, (later, later))
    capsys.readouterr()
    assert main([str(tree), str(target), "--load-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 images" in out and "(7 already there)" in out
    assert read_image(str(target / "train" / "b" / "0.jpg")).shape == (3, 4, 16)
    (target / "PREPARED.json").write_text("{not json")
    assert main([str(tree), str(target), "--load-size", "16"]) == 2
    assert "was prepared as None" in capsys.readouterr().err


def test_an_image_over_the_pixel_budget_is_refused_and_not_written(tree, tmp_path, capsys, monkeypatch):
    import trainers.data

    monkeypatch.setattr(trainers.data, "MAX_IMAGE_PIXELS", 1000)  # class a's 40 x 30 and 21 x 50 are over it
    target = tmp_path / "prepared"
    assert main([str(tree), str(target), "--load-size", "16"]) == 2
    assert "0.JPEG declares 30 x 40 pixels, over the budget" in capsys.readouterr().err
    assert [path for split in ("train", "test") for path in (target / split / "a").iterdir()] == []


def test_an_animated_image_loads_as_its_first_frame(tmp_path):
    from PIL import Image

    from trainers.data import read_image

    frames = [Image.new("RGB", (12, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image = read_image(str(tmp_path / "a.gif"))
    assert image.shape == (3, 8, 12) and image[0].float().mean() > 200 and image[2].float().mean() < 50
