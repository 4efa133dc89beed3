"""One loader interface over ImageNet shards (or the DeepLearningExamples folder layout), several backends.

    loader = make_loader("shards/", "train", "cpu", 256, device="cuda", dtype=torch.bfloat16, channels_last=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)         # resumed mid-epoch: set_epoch(epoch, start=its samples already consumed)
        for images, labels in loader:   # normalised images on `device`, int64 labels
            ...

Backends: ``dali`` (GPU decode), ``dali-cpu`` (DALI on CPU threads), ``cpu`` (DataLoader workers,
libjpeg-turbo + OpenCV, whole batches per task) and ``synthetic`` (device-resident random batches).
DALI and the GPU are imported lazily, so the other backends work where they are missing.
"""
import importlib
import importlib.util

import torch

from pipeline.loader import BACKEND_TABLE, BACKENDS, Loader  # noqa: F401 (the package's interface)

SPLITS = ("train", "val")


class MissingDependency(ImportError):
    """A backend's optional library is not installed; the message says what to install."""


def backend(name):
    """The BACKEND_TABLE row of `name`; ValueError naming the choices."""
    for row in BACKEND_TABLE:
        if row.name == name:
            return row
    raise ValueError(f"pipeline: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def available_backends(cuda=None):
    """The backends that can run here (DALI is looked up, not imported)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    dali = _dali_installed()
    return tuple(row.name for row in BACKEND_TABLE if (dali or not row.needs_dali) and (cuda or not row.needs_cuda))


def require(name):
    """Raise MissingDependency if backend `name` needs a library that is not installed."""
    if backend(name).needs_dali and not _dali_installed():
        raise MissingDependency(f"the {name} backend needs NVIDIA DALI: pip install 'imagenet-feed[dali]'")


def _dali_installed():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def make_loader(data_path, split, name, batch_size, *, device=None, dtype=torch.float32, channels_last=False,
                crop_size=224, val_size=256, workers=None, seed=0, strict=False, num_classes=1000, max_steps=None,
                accumulate=1):
    """Return the Loader for `split` ("train" or "val") of `data_path` read by backend `name`.

    `device` defaults to the current CUDA device when there is one, else the CPU. `workers` defaults to the
    cores this process may run on. `max_steps` caps the steps of a pass (``synthetic`` runs exactly that many);
    `num_classes` only matters to ``synthetic`` without a dataset to take the classes from. `accumulate` is the
    micro-batches (of `batch_size` per rank) per optimizer step: a train pass yields whole optimizer steps only
    (pipeline.sampling); validation ignores it.
    """
    row = backend(name)
    if split not in SPLITS:
        raise ValueError(f"pipeline: unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if batch_size < 1:
        raise ValueError(f"pipeline: batch_size must be positive, got {batch_size}")
    if accumulate < 1:
        raise ValueError(f"pipeline: accumulate must be positive, got {accumulate}")
    require(name)
    options = _options(split=split, batch_size=batch_size, accumulate=accumulate, device=device, dtype=dtype,
                       channels_last=channels_last, crop_size=crop_size, val_size=val_size, workers=workers, seed=seed,
                       strict=strict, max_steps=max_steps, num_classes=num_classes, gpu_decode=name == "dali")
    if row.needs_cuda and options.device.type != "cuda":
        raise ValueError(f"pipeline: backend {name} decodes on the GPU and needs a CUDA device; use dali-cpu")
    return importlib.import_module(row.module).make(data_path, options)


def batches_ahead(name, *, workers=None, device=None):
    """How many batches backend `name`'s loader may prepare before the first is asked for (bench warms up on it)."""
    options = _options(split="train", batch_size=1, accumulate=1, device=device, dtype=torch.float32,
                       channels_last=False, crop_size=1, val_size=1, workers=workers, seed=0, strict=False,
                       max_steps=None, num_classes=1, gpu_decode=name == "dali")
    return importlib.import_module(backend(name).module).batches_ahead(options)


def _options(**given):
    from pipeline.options import LoaderOptions

    return LoaderOptions.build(**given)
