import math

from torch import nn

from robustbench_dice.registry import register_model


@register_model("small_convnet")
def small_convnet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A 3x3 convolution (8 channels), ReLU, 2x2 max-pool, then one dense layer; an example for the docs."""
    if len(input_shape) == 1:  # flat square images (digits: 64 = 8 x 8) are viewed as one-channel images
        side = math.isqrt(input_shape[0])
        layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
        channels, height, width = 1, side, side
    else:
        layers, (channels, height, width) = [], input_shape
    return nn.Sequential(
        *layers,
        nn.Conv2d(channels, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * (height // 2) * (width // 2), num_classes),
    )
