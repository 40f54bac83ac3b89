"""What both data pipelines share: reading an image file, listing class folders, and
normalising uint8 batches on the device."""

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..training.files import printable, unreadable

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# torchvision's ImageNet statistics, on the 0-255 scale; used for every image folder.
MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255


def class_names(folder: Path) -> list[str]:
    """The class folders below folder (train/ or test/ of an image folder), sorted: a class's
    label is its place in this list, as torchvision's ImageFolder numbers them."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str) -> Image.Image:
    """torchvision's reader, but a file that is not a readable image is named. Image folders are
    too large to decode before training (ImageNet: 1.28M files): a bad file stops the run when
    it is first read, with its name, rather than be skipped in silence."""
    im = open_rgb(path)
    if isinstance(im, str):
        raise UserError(f"{printable(path)} is not a readable image ({im}). Remove or replace it.")
    return im


def open_rgb(path) -> Image.Image | str:
    """The image in RGB, or why it cannot be read: not a regular file (a named pipe would hang
    the run), a dangling link or a loop of links, not an image, truncated, or more pixels than
    PIL decodes (its guard against decompression bombs)."""
    why = unreadable(path)
    if why:
        return why
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            return im.convert("RGB")
    except PILLOWS_ERRORS as e:
        return decode_error(e)


def read_file(path, read):
    """read(f), f the image file at path opened for reading; a file that is not a readable image
    (open_rgb's reasons) is named in a UserError: the image-folder loaders' readers."""
    why = unreadable(path)
    if why is None:
        try:
            with open(path, "rb") as f:
                return read(f)
        except PILLOWS_ERRORS as e:
            why = decode_error(e)
    raise UserError(f"{printable(path)} is not a readable image ({why}). Remove or replace it.")


PILLOWS_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_error(e: Exception) -> str:
    """What an error of Pillow's says of the file it was reading."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image"
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels to decode safely: {e}"
    return str(e) or type(e).__name__


class Normalize:
    """uint8 to float, minus the training set's per-channel mean, over its std; in the memory
    layout the model runs fastest with (channels_last on most hardware)."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.mean = mean.view(1, 3, 1, 1).to(device)
        self.std = std.view(1, 3, 1, 1).to(device)
        self.memory_format = memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)
