"""Random images of CIFAR's shapes: for tests and speed measurements, not for accuracy."""

import torch

from .tensors import ImageData


def synthetic(
    num_classes: int = 10,
    train_size: int = 50000,
    test_size: int = 10000,
    image_size: int = 32,
    seed: int = 0,
) -> ImageData:
    """Random images and labels of CIFAR's shapes, for tests and speed measurements."""
    g = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.randint(0, 256, (n, 3, image_size, image_size), generator=g, dtype=torch.uint8)

    def labels(n):
        return torch.randint(0, num_classes, (n,), generator=g)

    return ImageData(
        images(train_size), labels(train_size), images(test_size), labels(test_size), num_classes
    )
