"""Weights a run starts from that are not a trainer checkpoint: torchvision's published ones (--pretrained), read from
the local torch cache only (a node of a cluster often has no network, and a download would land in the middle of a
run's start), or a file of plain weights given to --resume (`torch.save(model.state_dict())`, a published model, or
pytorch/examples' checkpoint.pth.tar). They load with weights_only=True; a run from them starts at epoch 0, or an
evaluation evaluates them."""
import os
from pathlib import Path

import torch
import torchvision

from common.errors import UsageError
from trainer import checkpoint
from trainer.checkpoint import CheckpointError

FETCH = "python -c \"import torchvision; torchvision.models.get_model_weights('{model}').DEFAULT.get_state_dict()\""


def published(model, num_classes):
    """The torch cache's file of torchvision's default weights for `model`; UsageError naming what to do when there
    are none, they are not in the cache, or they classify another number of classes than --num_classes."""
    try:
        weights = torchvision.models.get_model_weights(model).DEFAULT
    except (ValueError, AttributeError):
        raise UsageError(f"--pretrained: torchvision publishes no weights for --model {model}") from None
    classes = len(weights.meta["categories"])
    if num_classes not in (None, classes):
        raise UsageError(f"--pretrained: {weights} classify {classes} classes, not --num_classes {num_classes}")
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.is_file():
        raise UsageError(f"--pretrained: {weights} are not in the torch cache ({path}) and this run downloads "
                         f"nothing; fetch them where there is network with `{FETCH.format(model=model)}` and copy "
                         f"the file there (or set TORCH_HOME)")
    return os.fspath(path)


def load_into(model, path, model_name):
    """Load the weights in `path` (a file checkpoint.model_weights reads) into `model`."""
    fit(model, checkpoint.model_weights(checkpoint.load(path)), f"the weights in {path}", model_name)


def fit(model, state_dict, what, model_name):
    """model.load_state_dict, with CheckpointError in one line when the names or shapes do not match."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{what} do not fit --model {model_name} ({first})") from None
