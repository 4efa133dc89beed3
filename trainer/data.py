"""The run's train and validation loaders, and the flags only the data can refute."""
import dataclasses
import warnings

import torch
import torchvision

from common.errors import UsageError
from pipeline import make_loader


def build_loaders(config, ctx):
    """(config, train, val); train is None for an evaluation-only run. The step flags cap each loader's length;
    the config comes back with the shuffle window the train loader chose, which a resume must keep."""
    common = dict(device=ctx.device, dtype=config.amp_dtype or torch.float32, channels_last=config.channels_last,
                  seed=config.seed, num_classes=config.num_classes or 1000)
    train = None
    if not config.evaluate:
        _check_batch_norm(config)
        steps = _cap(config.training_step_per_epoch)  # optimizer steps; the loader counts micro-batches
        train = make_loader(config.data_path, "train", config, max_steps=steps and steps * config.accumulate,
                            accumulate=config.accumulate, **common)
        _check_fits(config, ctx, train)
    val = make_loader(config.data_path, "val", config, max_steps=_cap(config.eval_step_per_epoch), **common)
    if train is not None:
        config = dataclasses.replace(config, window=train.window)
    return config, train, val


def _check_fits(config, ctx, train):
    share = train.samples // (ctx.world_size * config.accumulate)
    if not len(train):
        raise UsageError(f"--batch-size {config.batch_size} leaves no training step: {config.data_path} has "
                         f"{train.samples} train samples, {share} for each of {ctx.world_size} rank(s) x --accumulate "
                         f"{config.accumulate}, so the largest batch that trains is {share}")
    if config.num_classes is not None and config.num_classes < train.num_classes:
        raise UsageError(f"--num_classes {config.num_classes} is below the dataset's {train.num_classes}")
    steps = len(train) // config.accumulate
    if config.skip_steps >= steps:
        ctx.say(f"trainer: --skip_steps {config.skip_steps} covers all {steps} steps of an epoch: no step is "
                "timed, so the report has no train_fps_*")


def _check_batch_norm(config):
    """A training batch of one image per rank cannot train BatchNorm (torch: "Expected more than 1 value per channel
    when training", mid-step): refused before any data is read. The rule is the batch, whatever the crop size: where
    the maps are still larger than 1 x 1 such a step runs, but its statistics are one image's."""
    if config.batch_size == 1 and _has_batch_norm(config.model):
        raise UsageError(f"a batch of 1 image per rank (--batch-size) cannot train --model {config.model}: its "
                         "BatchNorm layers need more than one value per channel; the smallest batch per rank that "
                         "trains it is 2")


def _has_batch_norm(name):
    with warnings.catch_warnings(), torch.device("meta"):  # the layers alone: no memory, no initialisation cost
        warnings.simplefilter("ignore")  # inception_v3's note on its initialisation is build_model's to show
        model = torchvision.models.get_model(name, weights=None)
    return any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in model.modules())


def _cap(steps):
    """-1 (the whole epoch) means no cap; more steps than an epoch has are capped by the loader."""
    return steps if steps > 0 else None
