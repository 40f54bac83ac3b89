"""[R1] figure 7: the standard deviation of each 3x3 layer's response in a trained net.

[R1] 4.2: "The responses are the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)". Here: the output of the BN that follows each 3x3 conv, the first
conv of the net included, in evaluation mode (the running statistics), over a whole split. The
standard deviation is taken over every value of the layer's output (images, channels and
positions together); [R1] does not say, and this is the plainest reading.
"""

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import UserError
from ..nets.models import ResNet, hooked_eval


def response_layers(model: ResNet) -> list[nn.BatchNorm2d]:
    """The BN after each 3x3 conv, in the order the data passes them."""
    options = model.layer1[0].o
    if options.activation != "original":
        raise UserError(
            f"figure 7 measures original units ([R1]); this net has {options.activation} units, "
            "whose BN does not follow its conv."
        )
    layers = [model.bn1] if model.conv1.kernel_size == (3, 3) else []
    for s in range(1, model.num_stages + 1):
        for unit in getattr(model, f"layer{s}"):
            layers += [bn for conv, bn in unit.layers() if conv.kernel_size == (3, 3)]
    return layers


@torch.no_grad()
def layer_responses(model: ResNet, batches: Iterable) -> list[float]:
    """The standard deviation of each 3x3 layer's response over the batches, in layer order."""
    layers = response_layers(model)
    sums = torch.zeros(len(layers), 3, dtype=torch.float64)  # count, sum, sum of squares

    def hook(i):
        def add(module, inputs, output):
            x = output.double()
            sums[i] += torch.stack([x.new_tensor(x.numel()), x.sum(), (x * x).sum()]).cpu()

        return add

    with hooked_eval(model, layers, hook):
        for x, _ in batches:
            model(x)
    n, total, squares = sums.unbind(1)
    mean = total / n
    return (squares / n - mean * mean).clamp_min(0).sqrt().tolist()
