"""Any folder of image files laid out as root/<class name>/<file>, decoded per batch with PIL.

Only the file list is held in memory, so folders larger than RAM work; class ids follow the
sorted folder names so they are the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssl_lightning.data.sources.base import ImageSource, stable_hash
from ssl_lightning.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PIL_MODES = {1: "L", 3: "RGB"}


class ImageFolderSource(ImageSource):
    """Images resized to image_size x image_size, grey (1 channel) or RGB (3), scaled to [0, 1]."""

    def __init__(self, root: str, image_size: int, channels: int) -> None:
        if channels not in PIL_MODES:
            raise UserError(
                f"image folders decode to 1 (grey) or 3 (RGB) channels, not {channels}: "
                "set dataset.channels=1 or 3"
            )
        if image_size < 1:
            raise UserError(f"dataset.source.image_size={image_size} must be >= 1, e.g. 32")
        self.root = Path(root)
        self.image_size = image_size
        self.num_channels = channels
        self.class_names, self._files, self._labels = _scan(self.root)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.num_channels, self.image_size, self.image_size

    def __len__(self) -> int:
        return len(self._files)

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.image_shape), dtype=np.float32)
        for row, index in enumerate(np.asarray(indices).tolist()):
            pixels = np.asarray(self._decode(self._files[index]), dtype=np.float32)
            out[row] = pixels.reshape(self.image_size, self.image_size, -1).transpose(2, 0, 1)
        return out / np.float32(255)

    def _decode(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert(PIL_MODES[self.num_channels]).resize(
                    (self.image_size, self.image_size), Image.Resampling.BILINEAR
                )
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(
                f"cannot decode image {path} ({err}): replace or remove the file"
            ) from err

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return {}

    def fingerprint(self) -> str:
        contents = stable_hash(
            *((str(path.relative_to(self.root)), *_size_mtime(path)) for path in self._files)
        )
        return stable_hash(
            "image_folder", str(self.root.resolve()), self.image_size, self.num_channels, contents
        )


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _scan(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Sorted class folder names, sorted image files of all classes, and their int64 labels."""
    if not root.is_dir():
        raise UserError(
            f"image folder {root} does not exist: set dataset.source.root to a folder laid out as "
            "root/<class name>/<image file>"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"image folder {root} has no class subfolders: put the images in "
            f"{root}/<class name>/ (one folder per class, even if there is only one)"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(
            p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not found:
            raise UserError(
                f"class folder {root / name} has no images ({', '.join(EXTENSIONS)}): add images "
                "or remove the folder"
            )
        files += found
        labels += [label] * len(found)
    return classes, files, np.asarray(labels, dtype=np.int64)
