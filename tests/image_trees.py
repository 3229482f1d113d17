"""Image-folder trees that tests write."""

from pathlib import Path


def noise_jpeg_tree(root: Path, train_per_class: int, test_per_class: int) -> str:
    """Two classes of noise JPEGs of several shapes (none square, so every canvas has padding)."""
    from PIL import Image

    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                size = (24 + 3 * (i % 4), 18 + 5 * (i % 3))
                Image.effect_noise(size, 10 + 3 * i + 40 * (cls == "b")).convert("RGB").save(
                    root / split / cls / f"{i}.jpg", quality=90)
    return str(root)
