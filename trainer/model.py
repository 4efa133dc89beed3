"""Any torchvision classification model by name, randomly initialised (no weight downloads), and its loss."""
from functools import cache

import torch
import torchvision

from common.errors import UsageError

# Inception-style models return (logits, aux logits...) while training. Their auxiliary heads are trained as
# their papers did (GoogLeNet: 0.3 per head; Inception v3: 0.4, the TF-slim recipe): every parameter then
# gets a gradient, which DDP requires, and the heads do the regularising they exist for.
AUX_LOSS_WEIGHTS = {"GoogLeNetOutputs": 0.3, "InceptionOutputs": 0.4}
# Inception v3's auxiliary head pools a 17x17 map with a 5x5 window and stride 3, then needs a 5x5 map: 299 px.
MIN_TRAIN_CROP = {"inception_v3": 299}


@cache
def classification_models():
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def check_train_crop(name, crop_size):
    """Raise UsageError when `name` cannot train at `crop_size`."""
    least = MIN_TRAIN_CROP.get(name, 1)
    if crop_size < least:
        raise UsageError(f"--model {name} trains at --crop-size {least} or more (its auxiliary head needs it), "
                         f"got {crop_size}; torchvision's recipe uses --crop-size 299 --val-size 342")


def build_model(name, num_classes, device, channels_last):
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


def training_loss(criterion, output, labels):
    """The loss a training step minimises: the main logits', plus the weighted auxiliary heads' if any."""
    if not isinstance(output, tuple):
        return criterion(output, labels)
    logits, *aux = output
    weight = AUX_LOSS_WEIGHTS[type(output).__name__]
    return criterion(logits, labels) + weight * sum(criterion(head, labels) for head in aux if head is not None)
