"""``folder:PATH`` — a directory of image files, optionally one subfolder per class.

Rules, applied to PATH (or to each split folder):

- Images are files ending in .jpg, .jpeg, .png, .bmp or .webp (any case); hidden files and
  folders (name starting with ``.``) are ignored.
- If any subfolder holds images (at any depth), the source is labelled: each subfolder is a class,
  labels index the sorted subfolder names, and images directly in PATH are an error (ambiguous).
  Otherwise the images directly in PATH are unlabelled (``label == -1``).
- If PATH has a ``train/`` subfolder, it is the train split, and a ``test/`` (else ``val/``)
  subfolder, when present, the test split; test classes must be among the train classes.

Images are decoded lazily, in ``__getitem__``; a file that cannot be decoded raises
:class:`DataError` naming it, or, while training, is skipped and counted (the next readable image
takes its place; see :mod:`selfsup.data.faults`). Empty (0-byte) files are left out when the
source is built and listed in ``DataSource.faults``; a folder of nothing but empty files is an
error.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from selfsup.data.decode import is_image_file
from selfsup.data.device_decode import read_image
from selfsup.data.faults import FaultLog, read_or_replace
from selfsup.data.registry import register_dataset, require_arg
from selfsup.data.source import DataError, DataSource

__all__ = ["ImageFolderDataset", "drop_empty", "scan_image_folder"]


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_under(directory: str, recursive: bool) -> list[str]:
    found: list[str] = []
    top = os.path.realpath(directory)
    seen = {top}  # symlinked folders are followed once, and never back up to an ancestor
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        real = [os.path.realpath(os.path.join(root, d)) for d in dirs]
        dirs[:] = [
            d
            for d, r in zip(dirs, real, strict=True)
            if r not in seen and not top.startswith(r.rstrip(os.sep) + os.sep)
        ]
        seen.update(real)
        found.extend(
            os.path.join(root, f) for f in sorted(files) if _visible(f) and is_image_file(f)
        )
        if not recursive:
            break
    return found


def drop_empty(
    paths: list[str], labels: list[int], where: str
) -> tuple[list[str], list[int], list[str]]:
    """Leave out 0-byte files: ``(paths, labels, faults)``, one fault message per file left out.

    Raises:
        DataError: Every file is empty.
    """
    empty = {p for p in paths if os.path.getsize(p) == 0}
    if not empty:
        return paths, labels, []
    if len(empty) == len(paths):
        raise DataError(
            f"image folder {where!r}: all {len(paths)} images are empty (0 bytes), e.g. "
            f"{sorted(empty)[0]}"
        )
    kept = [(p, y) for p, y in zip(paths, labels, strict=True) if p not in empty]
    faults = [f"image {p} is empty (0 bytes)" for p in sorted(empty)]
    return [p for p, _ in kept], [y for _, y in kept], faults


def scan_image_folder(
    directory: str, classes: list[str] | None = None
) -> tuple[list[str], list[int], list[str] | None]:
    """List the images of one folder and their labels.

    Args:
        directory: Folder to scan.
        classes: Class names to label with (the train split's, when scanning a test split);
            ``None`` derives them from the subfolders.

    Returns:
        ``(paths, labels, classes)``; ``classes`` is ``None`` and labels are ``-1`` when the
        folder has no class subfolders.

    Raises:
        DataError: The folder is missing, holds no images, mixes loose images with class
            folders or has a class unknown to ``classes``.
    """
    if not os.path.exists(directory):
        raise DataError(f"image folder {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise DataError(f"image folder {directory!r} is not a directory")
    subdirs = sorted(e.name for e in os.scandir(directory) if e.is_dir() and _visible(e.name))
    per_class = {name: _images_under(os.path.join(directory, name), True) for name in subdirs}
    per_class = {name: paths for name, paths in per_class.items() if paths}
    loose = _images_under(directory, recursive=False)

    if not per_class:
        if not loose:
            raise DataError(
                f"image folder {directory!r} holds no images "
                "(expected .jpg/.jpeg/.png/.bmp/.webp files, or class subfolders of them)"
            )
        if classes is not None:
            raise DataError(
                f"image folder {directory!r} has no class subfolders, but the train split has "
                f"classes {classes}"
            )
        return loose, [-1] * len(loose), None

    if loose:
        raise DataError(
            f"image folder {directory!r} holds both class subfolders {sorted(per_class)} and "
            f"loose images such as {os.path.basename(loose[0])!r}; move them into a class folder"
        )
    if classes is None:
        classes = sorted(per_class)
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise DataError(
            f"image folder {directory!r} has classes {unknown} that the train split lacks "
            f"(train classes: {classes})"
        )
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        images = per_class.get(name, [])
        paths.extend(images)
        labels.extend([index] * len(images))
    return paths, labels, classes


class ImageFolderDataset(Dataset):
    """Map-style dataset of image files decoded to uint8 (3, S, S).

    Args:
        paths: Image file paths.
        labels: One label per path (``-1`` = unlabelled).
        image_size: Side S.

    Attributes:
        faults: ``None`` (an unreadable image raises :class:`DataError`) or a
            :class:`~selfsup.data.faults.FaultLog` (it is recorded and the next readable image
            is returned instead).
    """

    decodes_image_files = True  # worth a decoded cache (selfsup.data.cache)
    defer_jpeg = False  # JPEGs left encoded, for the device (selfsup.data.device_decode)

    def __init__(self, paths: list[str], labels: list[int], image_size: int) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = paths
        self.labels = labels
        self.image_size = image_size
        self.faults: FaultLog | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_or_replace(self.faults, index, len(self.paths), self._read)

    def _read(self, index: int) -> dict[str, Any]:
        return {
            "image": read_image(self.paths[index], self.image_size, defer_jpeg=self.defer_jpeg),
            "label": self.labels[index],
            "index": index,
        }


@register_dataset(
    "folder",
    usage="folder:PATH",
    description="folder of images; class subfolders give labels, train/ + test/ give splits",
)
def build_folder(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``folder:PATH`` (see the module docstring)."""
    path = require_arg("folder", arg)
    root = os.path.expanduser(path)
    if not os.path.exists(root):
        raise DataError(f"image folder {path!r} does not exist")
    test_dir = next(
        (os.path.join(root, n) for n in ("test", "val") if os.path.isdir(os.path.join(root, n))),
        None,
    )
    train_dir = os.path.join(root, "train")
    test: Dataset | None = None
    faults: list[str] = []
    if os.path.isdir(train_dir):
        paths, labels, classes = scan_image_folder(train_dir)
        paths, labels, faults = drop_empty(paths, labels, train_dir)
        if test_dir is not None:
            test_paths, test_labels, _ = scan_image_folder(test_dir, classes)
            test_paths, test_labels, test_faults = drop_empty(test_paths, test_labels, test_dir)
            faults += test_faults
            test = ImageFolderDataset(test_paths, test_labels, image_size)
    else:
        paths, labels, classes = scan_image_folder(root)
        paths, labels, faults = drop_empty(paths, labels, root)
    what = f"{len(classes)} classes" if classes else "unlabelled"
    return DataSource(
        name=f"folder:{path}",
        kind="image",
        train=ImageFolderDataset(paths, labels, image_size),
        test=test,
        classes=classes,
        num_samples=len(paths),
        description=f"image folder {path} ({len(paths)} train images, {what})",
        faults=faults,
    )
