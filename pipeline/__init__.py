"""One loader interface over ImageNet shards (or the DeepLearningExamples folder layout), several backends.

    loader = make_loader("shards/", "train", "cpu", 256, device="cuda", dtype=torch.bfloat16, channels_last=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:   # normalised images on `device`, int64 labels
            ...

Backends: ``dali`` (GPU decode), ``dali-cpu`` (DALI on CPU threads), ``cpu`` (DataLoader workers,
libjpeg-turbo + OpenCV, whole batches per task) and ``synthetic`` (device-resident random batches).
DALI and the GPU are imported lazily, so the other backends work where they are missing.
"""
import importlib
import importlib.util

import torch

BACKENDS = ("dali", "dali-cpu", "cpu", "synthetic")
SPLITS = ("train", "val")
_MODULES = {"dali": "pipeline.dali", "dali-cpu": "pipeline.dali", "cpu": "pipeline.cpu",
            "synthetic": "pipeline.synthetic"}


class MissingDependency(ImportError):
    """A backend's optional library is not installed; the message says what to install."""


def available_backends(cuda=None):
    """The backends that can run here: `dali` needs DALI and a GPU, `dali-cpu` DALI (looked up, not imported)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    dali = _dali_installed()
    return tuple(b for b in BACKENDS if b == "cpu" or b == "synthetic" or dali and (b == "dali-cpu" or cuda))


def require(backend):
    """Raise MissingDependency if `backend` needs a library that is not installed."""
    if backend in ("dali", "dali-cpu") and not _dali_installed():
        raise MissingDependency(f"the {backend} backend needs NVIDIA DALI: pip install 'imagenet-feed[dali]'")


def _dali_installed():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def make_loader(data_path, split, backend, batch_size, *, device=None, dtype=torch.float32, channels_last=False,
                crop_size=224, val_size=256, workers=None, seed=0, strict=False, num_classes=1000, steps=None):
    """Return the loader for `split` ("train" or "val") of `data_path` read by `backend`.

    `device` defaults to the current CUDA device when there is one, else the CPU. `workers` defaults to the
    cores this process may run on. `steps` caps the steps per epoch (``synthetic`` runs exactly that many);
    `num_classes` only matters to ``synthetic`` without a dataset to take the classes from.
    """
    if backend not in BACKENDS:
        raise ValueError(f"pipeline: unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if split not in SPLITS:
        raise ValueError(f"pipeline: unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if batch_size < 1:
        raise ValueError(f"pipeline: batch_size must be positive, got {batch_size}")
    require(backend)
    from pipeline.options import LoaderOptions

    options = LoaderOptions.build(split=split, batch_size=batch_size, device=device, dtype=dtype,
                                  channels_last=channels_last, crop_size=crop_size, val_size=val_size,
                                  workers=workers, seed=seed, strict=strict, steps=steps)
    module = importlib.import_module(_MODULES[backend])
    if backend == "synthetic":
        return module.SyntheticLoader(data_path, options, num_classes=num_classes)
    return module.make(data_path, backend, options)
