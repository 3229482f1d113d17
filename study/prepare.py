"""A one-time copy of an image tree at the size the trials load it:
`python -m study.prepare SRC DST --load-size 256 [--workers N]`.

The `imagefolder` loader decodes every image and resizes it so that its longer side is `load_size`,
every epoch. A prepared tree holds each image already at that size (SRC/<split>/<class>/<name> ->
DST/<split>/<class>/<stem>.jpg for split train and test), so loader workers decode a smaller JPEG and skip
the resize: on 400 x 350 JPEGs at load_size 256, 2.4x the images per second per worker (measured on a
2-core AMD EPYC). Train on it with `--set data_root=DST` and the same load_size.

The images are re-encoded as JPEG at quality 95, so their pixels differ from resizing the originals on
the fly (by the JPEG error; FFCV's ImageNet recipe stores its images the same way, at quality 90): a
study's trials should all read the same tree. Reruns skip images already written (a file newer than its
source), so an interrupted preparation continues where it stopped; DST/PREPARED.json records the size
and quality, and a rerun at another size is refused rather than keeping the old images. Every file is
written whole through study.files, inside DST only.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study.cli import OneLineParser
from study.files import replace_file
from trainers.data import DataError, check_image_header, fit_longer_side, read_image, scan_image_folder

SPLITS = ("train", "test")
RECORD = "PREPARED.json"  # the load_size and JPEG quality the tree was written at
JPEG_QUALITY = 95
# Loader images per second per worker on a prepared tree over the original one: 1214 / 497, 400 x 350
# synthetic JPEGs at load_size 256 on a 2-core AMD EPYC (one worker). study.cost uses it.
PREPARED_DECODE_SPEEDUP = 2.4


def plan(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(source image, target file) for every image of both splits; raises DataError."""
    source, target = source.resolve(), target.resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise DataError(f"{target} and {source} overlap; give a target folder outside the source tree")
    jobs = []
    for split in SPLITS:
        if not (source / split).is_dir():
            raise DataError(f"{source} has no {split}/ folder; give the tree that --set data_root would name")
        samples, classes = scan_image_folder(source / split)
        for path, label in samples:
            jobs.append((Path(path), target / split / classes[label] / (Path(path).stem + ".jpg")))
    written = {}
    for image, out in jobs:
        if out in written:
            raise DataError(f"{image} and {written[out]} would both be written as {out}; rename one of them")
        written[out] = image
    return jobs


def make_folders(jobs: list[tuple[Path, Path]], target: Path) -> None:
    """The split and class folders, made one level at a time, each checked to lie inside target (links
    followed) before anything is made in it."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for folder in sorted({out.parent for _, out in jobs}):
        for level in [*reversed(folder.relative_to(root).parents)][1:] + [folder.relative_to(root)]:
            path = root / level
            if not path.parent.resolve().is_relative_to(root):
                raise DataError(f"{path.parent} leads outside {root} through a link; remove the link")
            path.mkdir(exist_ok=True)
            if not path.resolve().is_relative_to(root):
                raise DataError(f"{path} leads outside {root} through a link; remove the link")


def check_record(target: Path, load_size: int) -> None:
    """DST holds images of one size and quality: a tree prepared otherwise is refused (its images would be
    kept as they are), and a new one is recorded before any image is written; raises DataError."""
    record = {"load_size": load_size, "jpeg_quality": JPEG_QUALITY}
    path = target / RECORD
    if path.is_file() and not path.is_symlink():
        try:
            found = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError):
            found = None
        if found != record:
            raise DataError(f"{target} was prepared as {found}, not {record}; give another target folder, or the "
                            f"same --load-size")
        return
    if path.is_symlink() or path.exists():
        raise DataError(f"{path} is not a regular file; remove it")
    replace_file(path, json.dumps(record))


def prepare_one(image: Path, out: Path, load_size: int) -> bool:
    """Write one resized image; False when an up-to-date copy is already there."""
    from torchvision.io import encode_jpeg

    if out.is_file() and not out.is_symlink() and out.stat().st_mtime >= image.stat().st_mtime:
        return False
    check_image_header(str(image))  # the pixel budget, before a decode could take gigabytes
    resized = fit_longer_side(read_image(str(image)), load_size)
    replace_file(out, encode_jpeg(resized, quality=JPEG_QUALITY).numpy().tobytes())
    return True


def prepare(source: Path, target: Path, load_size: int, workers: int, report_every: float = 30.0) -> tuple[int, int]:
    """Prepare the tree (see the module's notes); returns (images written, images already there)."""
    jobs = plan(source, target)
    make_folders(jobs, target)
    check_record(target, load_size)
    started, last = time.monotonic(), time.monotonic()
    written = done = 0
    # torchvision's decoder and encoder release the GIL, so threads use the CPUs.
    with ThreadPoolExecutor(workers) as pool:
        for fresh in pool.map(lambda job: prepare_one(*job, load_size), jobs):
            written += fresh
            done += 1
            if time.monotonic() - last >= report_every:
                last = time.monotonic()
                print(f"prepared {done} of {len(jobs)} images ({done / (last - started):.0f} per second)", flush=True)
    return written, len(jobs) - written


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the image tree: SOURCE/train/<class>/ and SOURCE/test/<class>/")
    parser.add_argument("target", type=Path, help="where the resized copy goes (made if missing)")
    parser.add_argument("--load-size", type=int, required=True,
                        help="the load_size the trials will read it at (the profile's, e.g. 256 at imagenet)")
    parser.add_argument("--workers", type=int, default=1, help="threads decoding and encoding (default 1)")
    args = parser.parse_args(argv)
    if not 8 <= args.load_size <= 4096 or args.workers < 1:
        print("error: --load-size must be in 8..4096 and --workers at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        written, kept = prepare(args.source, args.target, args.load_size, args.workers)
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - started
    print(f"wrote {written} images to {args.target} ({kept} already there) in {seconds:.0f} s; "
          f"train on it with --set data_root={args.target} and load_size {args.load_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
