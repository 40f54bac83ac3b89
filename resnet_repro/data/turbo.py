"""Decode only the part of a JPEG a crop needs: libjpeg-turbo 3's TurboJPEG API, through ctypes.

A random crop of an ImageNet photograph covers about half of it. libjpeg-turbo 3 can decode a
region (tj3SetCroppingRegion): rows below the region are never decoded, rows above and columns
beside it are entropy-decoded and skipped, without the inverse DCT, upsampling and colour
conversion that cost most. Its pixels are those of a full decode (tests/test_boxes.py checks).
No small wheel wraps that call, so this module does, in about a hundred lines.

The library: the copy inside the `turbojpeg` wheel (`pip install 'resnet-repro[jpeg]'`), else a
system libturbojpeg of version 3 or newer (conda's libjpeg-turbo, say). Without one, `find()`
says None and data.loader=boxes decodes with Pillow (crops.py), whole rows at a reduced DCT
scale, the same crops, in about 1.4 times the time (docs/speed.md, "Image folders").
"""

import ctypes
import ctypes.util
import glob
import importlib.util
import os
from pathlib import Path

import numpy as np

# TurboJPEG 3's constants (turbojpeg.h)
INIT_DECOMPRESS = 1
PARAM_STOPONWARNING, PARAM_SUBSAMP, PARAM_JPEGWIDTH, PARAM_JPEGHEIGHT = 0, 4, 5, 6
PF_RGB, PF_RGBX = 0, 2  # RGBX: 4 bytes a pixel, as Pillow keeps them (shared, not copied)
# Width of an iMCU, in pixels, by chroma subsampling (TJSAMP_444, 422, 420, GRAY, 440, 411, 441):
# a region's left edge must fall on one.
MCU_WIDTH = {0: 8, 1: 16, 2: 16, 3: 8, 4: 8, 5: 32, 6: 8}


class Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class Scale(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


def library_path() -> str | None:
    """A TurboJPEG library with the version 3 API: the turbojpeg wheel's, else the system's."""
    spec = importlib.util.find_spec("turbojpeg")
    if spec and spec.origin:
        site = Path(spec.origin).parent
        found = sorted(glob.glob(str(site / "turbojpeg.libs" / "libturbojpeg*")))
        if found:
            return found[0]
    return ctypes.util.find_library("turbojpeg")


class Decoder:
    """One TurboJPEG decompressor. Not to be shared between threads or processes: find() makes
    one for each process that asks."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        if not hasattr(lib, "tj3SetCroppingRegion"):
            raise OSError(f"{path} is older than libjpeg-turbo 3")
        lib.tj3Init.restype = ctypes.c_void_p
        lib.tj3Init.argtypes = [ctypes.c_int]
        lib.tj3Get.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.tj3Set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.tj3DecompressHeader.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.tj3SetScalingFactor.argtypes = [ctypes.c_void_p, Scale]
        lib.tj3SetCroppingRegion.argtypes = [ctypes.c_void_p, Region]
        lib.tj3Decompress8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.tj3Decompress8.argtypes += [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.tj3Destroy.argtypes = [ctypes.c_void_p]
        self.lib, self.handle = lib, lib.tj3Init(INIT_DECOMPRESS)
        if not self.handle:
            raise OSError("tj3Init failed")
        lib.tj3Set(self.handle, PARAM_STOPONWARNING, 1)  # a damaged file is not decoded here

    def __del__(self):
        if getattr(self, "handle", None):
            self.lib.tj3Destroy(self.handle)

    def size(self, data: bytes) -> tuple[int, int, int] | None:
        """(width, height, subsampling) from the JPEG's header, or None if TurboJPEG cannot
        decode it (not a JPEG, CMYK, damaged): the caller decodes it another way."""
        if self.lib.tj3DecompressHeader(self.handle, data, len(data)) != 0:
            return None
        get = self.lib.tj3Get
        w, h = get(self.handle, PARAM_JPEGWIDTH), get(self.handle, PARAM_JPEGHEIGHT)
        subsampling = get(self.handle, PARAM_SUBSAMP)
        return (w, h, subsampling) if subsampling in MCU_WIDTH else None

    def region(
        self,
        data: bytes,
        header: tuple[int, int, int],
        denom: int,
        box: tuple[float, ...],
        channels: int = 3,
    ) -> tuple[np.ndarray, int, int] | None:
        """The pixels of the image scaled by 1/denom (1, 2, 4 or 8), those of the rows and
        columns that cover box (left, top, right, bottom, in the scaled image's pixels): an
        array of RGB (channels=3) or RGBX (4) and the place of its top-left corner (x, y) in
        the scaled image. None if the file cannot be decoded (the caller decodes it another
        way, or names it)."""
        width, height, subsampling = header
        w, h = -(-width // denom), -(-height // denom)  # TurboJPEG's scaled size: rounded up
        mcu = max(1, MCU_WIDTH[subsampling] // denom)
        x = max(0, int(box[0]) // mcu * mcu)
        y = max(0, int(box[1]))
        right, bottom = min(w, -int(-box[2] // 1)), min(h, -int(-box[3] // 1))
        if self.lib.tj3DecompressHeader(self.handle, data, len(data)) != 0:
            return None
        self.lib.tj3SetScalingFactor(self.handle, Scale(1, denom))
        self.lib.tj3SetCroppingRegion(self.handle, Region(x, y, right - x, bottom - y))
        out = np.empty((bottom - y, right - x, channels), np.uint8)
        pixel_format = PF_RGB if channels == 3 else PF_RGBX
        if self.lib.tj3Decompress8(self.handle, data, len(data), out.ctypes.data, 0, pixel_format):
            return None
        return out, x, y


_found: dict[int, Decoder | None] = {}  # by process id: a forked worker makes its own


def find() -> Decoder | None:
    """This process's TurboJPEG decoder, or None where no version 3 library is found."""
    pid = os.getpid()
    if pid not in _found:
        path = library_path()
        try:
            _found[pid] = Decoder(path) if path else None
        except OSError:
            _found[pid] = None
    return _found[pid]
