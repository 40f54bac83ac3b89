"""The official CIFAR archives: fetched only when data.download=true and data.root holds no
copy, MD5-checked, unpacked into data.root."""

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..errors import UserError


def download_cifar(url: str, md5: str, root: Path) -> None:
    """Fetch the official archive, check its MD5, and unpack it into root."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise UserError(
                f"No data at data.root={root}, and downloading {url} failed "
                f"({getattr(e, 'reason', e)}). If this machine is offline, copy the data set here "
                "by other means and point data.root at it (make train DATA=/path/to/data)."
            ) from None
        got = hashlib.md5(archive.read_bytes()).hexdigest()
        if got != md5:
            raise UserError(
                f"The archive downloaded from {url} is corrupt (MD5 {got}, "
                f"expected {md5}). Try again."
            )
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
