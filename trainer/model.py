"""Any torchvision classification model by name, randomly initialised (no weight downloads)."""
from functools import cache

import torch
import torchvision


@cache
def classification_models():
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def build_model(name, num_classes, device, channels_last):
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


def logits(output):
    """Inception-style models return (logits, aux logits) while training; the main logits are trained."""
    return output[0] if isinstance(output, tuple) else output
