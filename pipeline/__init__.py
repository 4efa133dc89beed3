"""One loader interface over ImageNet shards (or the DeepLearningExamples folder layout), several backends.

    options = DataOptions(loader="cpu", batch_size=256, crop_size=224)
    loader = make_loader("shards/", "train", options, device="cuda", dtype=torch.bfloat16, channels_last=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)         # resumed mid-epoch: set_epoch(epoch, start=its samples already consumed)
        loader.set_resolution(side)     # progressive resizing (train): side <= crop_size, between passes
        for images, labels in loader:   # normalised images on `device`, int64 labels
            ...

Backends: ``dali`` (GPU decode), ``dali-cpu`` (DALI on CPU threads), ``cpu`` (DataLoader workers,
libjpeg-turbo + OpenCV, whole batches per task) and ``synthetic`` (device-resident random batches).
DALI and the GPU are imported lazily, so the other backends work where they are missing.

The data path may be a URL (s3://, gs://, http(s)://, common.store): its shards are read through a node-local cache
of at most `cache_limit` bytes, in the shard-window order (pipeline.sampling), by every backend.
"""
import importlib
import importlib.util

import torch

from common.errors import UsageError
from common.options import subset
from pipeline.backends import BACKEND_TABLE, BACKENDS, CEILING, DATA_BACKENDS, Loader  # noqa: F401 (the interface)
from pipeline.options import DATA_TIMEOUT_S, ORDERS, DataOptions, LoaderOptions, resolve_device  # noqa: F401 (the interface)

SPLITS = ("train", "val")


class MissingDependency(ImportError):
    """A backend's optional library is not installed; the message says what to install."""


def backend(name):
    """The BACKEND_TABLE row of `name`; ValueError naming the choices."""
    for row in BACKEND_TABLE:
        if row.name == name:
            return row
    raise UsageError(f"pipeline: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def available_backends(cuda=None):
    """The backends that can run here (DALI is looked up, not imported)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    dali = _dali_installed()
    return tuple(row.name for row in BACKEND_TABLE if (dali or not row.needs_dali) and (cuda or not row.needs_cuda))


def default_backend(cuda):
    """The first backend of the table marked default that can run here."""
    usable = available_backends(cuda)
    return next(row.name for row in BACKEND_TABLE if row.default and row.name in usable)


def require(name, cuda=None):
    """Raise MissingDependency if backend `name` needs a library that is not installed; ValueError if it needs CUDA
    and `cuda` (whether the run has a CUDA device; None: not checked) says there is none, its message a phrase the
    caller puts after the backend's name."""
    row = backend(name)
    if row.needs_dali and not _dali_installed():
        raise MissingDependency(f"the {name} backend needs NVIDIA DALI: pip install 'imagenet-feed[dali]'")
    if row.needs_cuda and cuda is False:
        others = [other.name for other in BACKEND_TABLE if other.module == row.module and not other.needs_cuda]
        raise UsageError("decodes on the GPU and needs a CUDA device"
                         + (f"; on the CPU use {' or '.join(others)}" if others else ""))


def _dali_installed():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def make_loader(data_path, split, options, *, device=None, dtype=torch.float32, channels_last=False, seed=0,
                strict=False, num_classes=1000, max_steps=None, accumulate=1):
    """Return the Loader for `split` ("train" or "val") of `data_path` (a path or a URL) read as `options` say
    (DataOptions, or any object holding its fields, such as the trainer's RunConfig), checked by its validate().

    `device` defaults to the current CUDA device when there is one, else the CPU; `options.workers` to the cores this
    process may run on. `max_steps` caps the steps of a pass (``synthetic`` runs exactly that many); `num_classes`
    only matters to ``synthetic`` without a dataset to take the classes from. `accumulate` is the micro-batches (of
    batch_size per rank) per optimizer step: a train pass yields whole optimizer steps only (pipeline.sampling);
    validation ignores it.

    Train images are RandomResizedCrop boxes of crop_scale (min, max) of the image's area and crop_ratio (min, max)
    aspect ratio (torchvision's defaults, pipeline.crops), resized to crop_size x crop_size, or to the side
    set_resolution gives for the next passes (progressive resizing): crop_size is the largest side, which the batch
    memory is sized for once. Validation resizes the shorter side to val_size and centre-crops val_crop_size
    (default: crop_size). ``synthetic`` ignores the crop ranges.

    The train order: "global" (one permutation of all samples; the default for a local path) or "shard-window"
    (shards permuted, samples permuted within windows of `window` shards; the default, and the only order, for a
    URL). The window defaults to what cache_limit holds three times over (the window read, the next, and one a slower
    rank may still read: limit // (3 x the largest shard)), else to all shards; the loader's `window` says what it
    took, which a resume must pass again. Validation keeps its stored order.

    A URL's shards are fetched whole into cache_dir (default ~/.cache/imagenet-feed/<hash of the URL>), shared by the
    ranks of a node and holding at most cache_limit bytes of shards (required for a URL). A cache_limit given with a
    local path only sets the window, so that it reads the order the URL would.

    data_timeout: the longest any wait for data may last (a shard's download, room in the cache, a claim another
    process holds, a worker's batch); past it the pass raises common.errors.DataTimeout saying what it waited for.
    """
    if split not in SPLITS:
        raise UsageError(f"pipeline: unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if accumulate < 1:
        raise UsageError(f"pipeline: accumulate must be positive, got {accumulate}")
    device = resolve_device(device)
    try:
        data = subset(DataOptions, options).validate(data_path, cuda=device.type == "cuda")
    except UsageError as error:
        raise UsageError(f"pipeline: {error}") from None
    row = backend(data.loader)
    built = LoaderOptions.build(data, split, device=device, accumulate=accumulate, dtype=dtype,
                                channels_last=channels_last, seed=seed, strict=strict, max_steps=max_steps,
                                num_classes=num_classes, gpu_decode=row.gpu_decode)
    return importlib.import_module(row.module).make(data_path, built)


def batches_ahead(name, *, workers=None, device=None):
    """How many batches backend `name`'s loader may prepare before the first is asked for (bench warms up on it)."""
    options = LoaderOptions.build(DataOptions(loader=name, batch_size=1, crop_size=1, val_size=1, workers=workers),
                                  "train", device=resolve_device(device), accumulate=1, dtype=torch.float32,
                                  channels_last=False, seed=0, strict=False, max_steps=None, num_classes=1,
                                  gpu_decode=backend(name).gpu_decode)
    return importlib.import_module(backend(name).module).batches_ahead(options)
