"""Image files (JPEG, PNG, ...) as uint8 RGB arrays, through Pillow.

Every image becomes [H, W, 3] RGB whatever its mode (grayscale, RGBA, palette, CMYK), as the
peers' ``Image.open(path).convert("RGB")`` does, so a folder of mixed images still stacks into
one clip. EXIF orientation is not applied (the peers do not apply it either). Pillow is an
optional extra, imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from unipair.errors import DataFormatError, DataNotFoundError

__all__ = ["read_image"]

#: Pillow modes with more than 8 bits per sample: converting them to RGB clips every value
#: above 255, so they are refused rather than silently saturated.
HIGH_DEPTH_PREFIXES = ("I", "F")


def _import_pil() -> ModuleType:
    """``PIL.Image``, or an ImportError saying how to install it."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            "reading images needs Pillow, an optional extra: pip install 'unipair[media]'"
        ) from e
    return Image


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as a writable uint8 array [H, W, 3] in RGB order.

    A missing file is a DataNotFoundError; a file Pillow cannot decode (not an image,
    truncated) or a 16-bit/float image is a DataFormatError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"image file {path} does not exist")
    image_mod = _import_pil()
    try:
        with image_mod.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later
            mode = img.mode
            rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise DataFormatError(f"cannot read image file {path}: {e}") from None
    if mode.startswith(HIGH_DEPTH_PREFIXES):
        raise DataFormatError(
            f"image file {path} has {mode!r} samples (more than 8 bits); convert it to 8-bit RGB"
        )
    return np.array(rgb, dtype=np.uint8)
