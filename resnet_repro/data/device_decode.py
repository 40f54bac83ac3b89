"""The pipeline of data.loader=device: JPEGs decoded in batches on the device that trains (on a
CUDA GPU, nvJPEG, which uses the hardware JPEG decoder of A100 and H100), then cropped, resized
and flipped there.

DataLoader workers only read: each file's bytes and its size from its header, and the boxes
of its crops (boxes.py, seeded as crops.py seeds them), so one CPU core feeds thousands of
images a second. The main process hands a batch of files to the decoder (TorchCodec's
`decode_jpeg` where it is installed, else torchvision's, deprecated since 0.29 but present)
and crops each image on the device as torchvision's transforms do: the random-resized crop's
integer box is cut out, then resized; for [R1]'s scale augmentation and evaluation the whole
image is resized, then cut. On a CPU the same code runs with the CPU decoder, as the tests run it.

Files that are not plain JPEGs (a PNG, a CMYK JPEG: ImageNet has a few dozen) are decoded by
the worker with Pillow and sent re-encoded as JPEG at quality 95.
"""

import io
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from ..training.files import printable
from .crops import BoxCrops
from .images import read_file


@dataclass
class Encoded:
    """A batch as the workers send it: the files' bytes end to end, where each starts, and for
    each image its crops as rows of (left, top, width, height, flip) in source pixels."""

    data: torch.Tensor  # uint8, all files' bytes
    offsets: torch.Tensor  # int64, n + 1
    plans: torch.Tensor  # float64, n x crops x 5
    labels: torch.Tensor  # int64, n
    indices: torch.Tensor  # int64, n: which samples (to name a file the decoder refuses)

    def pin_memory(self) -> "Encoded":  # the DataLoader's pin thread calls it
        return Encoded(*(t.pin_memory() for t in vars(self).values()))


class EncodedCrops(BoxCrops):
    """BoxCrops' boxes and seeds, but each image sent as its file's bytes, to be decoded and
    cropped on the device (decode_on)."""

    def __getitems__(self, keys) -> Encoded:
        files, plans, labels, indices = [], [], [], []
        for key in keys:
            index, seed = key if isinstance(key, tuple) else (key, 0)
            path, label = self.samples[index]
            data, (width, height) = read_jpeg(path)
            chosen = self.boxes(width, height, seed)
            files.append(data)
            plans.append([[*box, float(flip)] for box, flip in chosen])
            labels.append(label)
            indices.append(index)
        offsets = torch.tensor([0] + [len(f) for f in files]).cumsum(0)
        data = torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8)
        return Encoded(
            data,
            offsets,
            torch.tensor(plans, dtype=torch.float64),
            torch.tensor(labels),
            torch.tensor(indices),
        )


def read_jpeg(path: str) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes, if a JPEG in RGB or greyscale, else the image re-encoded so; and its
    size. A file that is not a readable image is named, as images.read_image does."""

    def bytes_and_size(f):
        raw = f.read()
        with Image.open(io.BytesIO(raw)) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "L"):
                return raw, im.size  # only the header was read
            out = io.BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=95)
            return out.getvalue(), im.size

    return read_file(path, bytes_and_size)


def jpeg_decoder():
    """decode(list of 1-D uint8 CPU tensors, device) -> list of 3 x H x W uint8 on device."""
    try:
        from torchcodec.decoders import decode_jpeg

        return lambda files, device: decode_jpeg(files, mode="RGB", device=device)
    except ImportError:
        from torchvision.io import ImageReadMode, decode_jpeg

        def decode(files, device):
            with warnings.catch_warnings():  # deprecated in favour of TorchCodec since 0.29
                warnings.simplefilter("ignore")
                return decode_jpeg(files, mode=ImageReadMode.RGB, device=device)

        return decode


def decode_on(batch: Encoded, device: torch.device, size: int, samples, decode) -> torch.Tensor:
    """The batch's crops on the device: uint8, n x 3 x size x size (n x crops x ... for more
    than one crop an image)."""
    n = len(batch.labels)
    offsets = batch.offsets.tolist()
    files = [batch.data[offsets[i] : offsets[i + 1]] for i in range(n)]
    try:
        images = decode(files, device)
    except RuntimeError:  # which one? decoded one by one, the bad file is named
        for i, f in enumerate(files):
            try:
                decode([f], device)
            except RuntimeError as e:
                path = samples[int(batch.indices[i])][0]
                msg = str(e).strip().splitlines()[-1].split(".cpp:")[-1]  # not the C++ file
                msg = msg.split(", ", 1)[-1] if ".cpp:" in str(e) else msg
                raise UserError(
                    f"{printable(path)} is not a readable image ({msg}). Remove or replace it."
                ) from None
        raise
    crops = batch.plans.shape[1]
    out = torch.empty(n, crops, 3, size, size, dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        resized = {}  # ten crops share one resized image
        for j, (left, top, width, height, flip) in enumerate(batch.plans[i].tolist()):
            crop = cut(image, left, top, width, height, size, resized)
            out[i, j] = crop.flip(-1) if flip else crop
    return out if crops > 1 else out[:, 0]


def cut(image, left, top, width, height, size: int, resized: dict) -> torch.Tensor:
    """size x size of image from the box: an integer box is cut out and resized (torchvision's
    RandomResizedCrop); another is a square of the image resized by size / width, cut there
    (Resize or RandomShortestSize, then a crop)."""
    if all(float(v).is_integer() for v in (left, top, width, height)):
        region = image[:, int(top) : int(top + height), int(left) : int(left + width)]
        return resize(region, size, size)
    _, h, w = image.shape
    rw, rh = round(w * size / width), round(h * size / height)
    if (rw, rh) not in resized:
        resized[(rw, rh)] = resize(image, rh, rw)
    x, y = round(left * size / width), round(top * size / height)
    return resized[(rw, rh)][:, y : y + size, x : x + size]


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear with antialiasing, rounded back to uint8: torchvision's resize of a tensor."""
    x = F.interpolate(
        image[None].float(),
        size=(height, width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return x[0].round_().clamp_(0, 255).to(torch.uint8)
