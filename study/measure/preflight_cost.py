"""Seconds of the launch check that every image file decodes, on a first run and on a repeat:
`python -m study.measure.preflight_cost --root DIR [--images 101000] [--classes 100] [--side 32]`.

The check (study.safety.preflight.check_image_files) decodes every file of an ImageFolder tree on all
of this machine's CPUs and records each decoded file's size and modification time in a manifest under
the run's storage; a repeat decodes only what changed. DIR is filled with synthetic JPEGs (random
pixels, quality 90; 90% of them under train/, 10% under test/) unless it already holds the tree
this command wrote; the manifest goes to DIR/storage, removed before the first run. Wall-clock time
of this machine: quote it with the CPU model.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from study.cli import OneLineParser

DONE = "synthetic-tree.txt"  # written last: the tree under DIR is whole


def write_class(folder: Path, count: int, side: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for index in range(count):
        pixels = generator.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def write_tree(root: Path, images: int, classes: int, side: int) -> None:
    """`images` JPEGs over `classes` folders of train/ and test/, 9 in 10 of them for training."""
    per_class = images // classes
    train = per_class - per_class // 10
    jobs = [(root / split / f"class{c:04d}", count, side, c + offset)
            for split, count, offset in (("train", train, 0), ("test", per_class - train, classes))
            for c in range(classes)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(write_class, *zip(*jobs)))
    (root / DONE).write_text(f"images={per_class * classes} classes={classes} side={side}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.preflight_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of the synthetic tree (made if absent)")
    parser.add_argument("--images", type=int, default=101000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--side", type=int, default=32, help="pixels per side of each image")
    args = parser.parse_args(argv)
    if args.classes < 2 or args.images < 10 * args.classes or args.side < 8:
        print("error: need --classes >= 2, --images >= 10 x --classes and --side >= 8", file=sys.stderr)
        return 2
    if args.root.exists() and not (args.root / DONE).is_file() and any(args.root.iterdir()):
        print(f"error: {args.root} holds files this command did not write; give an empty or new folder",
              file=sys.stderr)
        return 2
    from study.safety.preflight import check_image_files
    from trainers import data as datasets
    from trainers.config import TrialConfig

    if not (args.root / DONE).is_file():
        started = time.perf_counter()
        write_tree(args.root, args.images, args.classes, args.side)
        print(f"wrote {args.root} in {time.perf_counter() - started:.0f} s")
    data = datasets.load(TrialConfig.create(dataset="imagefolder", data_root=str(args.root), method="npidv2"))
    storage = args.root / "storage"
    if storage.is_symlink():  # the manifest is written there: never through a link out of DIR
        print(f"error: {storage} is a link; remove it", file=sys.stderr)
        return 2
    shutil.rmtree(storage, ignore_errors=True)
    print(f"{len(datasets.image_files(data))} image files, {os.cpu_count()} CPUs")
    for run in ("first run", "repeat"):
        started = time.perf_counter()
        check_image_files(data, str(args.root), storage)
        print(f"  {run}: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
