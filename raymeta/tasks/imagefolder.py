"""Load a one-folder-per-class image tree (Omniglot / mini-ImageNet exports).

Layout: ``root/<class name>/<image>.png|jpg|jpeg|bmp``. Class ids follow the sorted
folder names; images are converted to grayscale (or RGB), resized once to
``size x size`` and scaled to ``[0, 1]``, so episodes only index rows afterwards.

Example:
    >>> data = load_image_folder("path/to/omniglot_export", size=28)  # doctest: +SKIP
    >>> family = DatasetFamily(data=data, ways=5, shots=1)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raymeta.errors import EpisodeError
from raymeta.tasks.episodes import LabelledData

__all__ = ["IMAGE_SUFFIXES", "list_image_classes", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def list_image_classes(root: str | Path) -> list[str]:
    """Sorted class-folder names under ``root`` that contain at least one image.

    Raises:
        EpisodeError: ``root`` is not a directory or holds no class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise EpisodeError(
            f"image folder root {str(root)!r} is not a directory; expected "
            f"root/<class>/<image>.png"
        )
    classes = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())
    )
    if not classes:
        raise EpisodeError(
            f"no class folders with images ({', '.join(IMAGE_SUFFIXES)}) under "
            f"{str(root)!r}; expected root/<class>/<image>.png"
        )
    return classes


def load_image_folder(
    root: str | Path, *, size: int = 28, grayscale: bool = True
) -> LabelledData:
    """Read every image below ``root`` into one labelled tensor dataset.

    Args:
        root: Directory with one sub-folder per class.
        size: Images are resized to ``size x size``.
        grayscale: Convert to one channel (``N x size x size``); else RGB
            (``N x 3 x size x size``).

    Returns:
        :class:`~raymeta.tasks.episodes.LabelledData` with float features in
        ``[0, 1]`` and labels = index of the class in :func:`list_image_classes`.

    Raises:
        EpisodeError: Missing root, no classes, or an unreadable image (named).
    """
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(list_image_classes(root)):
        for path in sorted((Path(root) / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert("L" if grayscale else "RGB").resize((size, size))
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as err:
                raise EpisodeError(f"cannot read image {str(path)!r}: {err}") from None
            images.append(arr if grayscale else arr.transpose(2, 0, 1))
            labels.append(label)
    return LabelledData(
        torch.from_numpy(np.stack(images)), torch.as_tensor(labels, dtype=torch.int64)
    )
