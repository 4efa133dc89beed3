"""One loader interface over ImageNet shards (or the DeepLearningExamples folder layout), several backends.

    loader = make_loader("shards/", "train", "cpu", 256, device="cuda", dtype=torch.bfloat16, channels_last=True)
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
import math
import numbers
from dataclasses import dataclass

import torch

from common import store
from common.errors import UsageError
from pipeline import crops
from pipeline.backends import BACKEND_TABLE, BACKENDS, CEILING, DATA_BACKENDS, Loader  # noqa: F401 (the interface)
from pipeline.options import DATA_TIMEOUT_S, ORDERS  # noqa: F401 (DATA_TIMEOUT_S: the interface)

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


def make_loader(data_path, split, name, batch_size, *, device=None, dtype=torch.float32, channels_last=False,
                crop_size=224, val_size=256, workers=None, seed=0, strict=False, num_classes=1000, max_steps=None,
                accumulate=1, order=None, window=None, cache_dir=None, cache_limit=None, crop_scale=crops.SCALE,
                crop_ratio=crops.RATIO, timeout=DATA_TIMEOUT_S):
    """Return the Loader for `split` ("train" or "val") of `data_path` (a path or a URL) read by backend `name`.

    `device` defaults to the current CUDA device when there is one, else the CPU. `workers` defaults to the
    cores this process may run on. `max_steps` caps the steps of a pass (``synthetic`` runs exactly that many);
    `num_classes` only matters to ``synthetic`` without a dataset to take the classes from. `accumulate` is the
    micro-batches (of `batch_size` per rank) per optimizer step: a train pass yields whole optimizer steps only
    (pipeline.sampling); validation ignores it.

    Train images are RandomResizedCrop boxes of `crop_scale` (min, max) of the image's area and `crop_ratio` (min,
    max) aspect ratio (torchvision's defaults, pipeline.crops), resized to crop_size x crop_size, or to the side
    set_resolution gives for the next passes (progressive resizing): `crop_size` is the largest side, which the
    batch memory is sized for once. Validation resizes the shorter side to `val_size` and centre-crops `crop_size`.
    ``synthetic`` ignores the crop ranges.

    The train order: `order` "global" (one permutation of all samples; the default for a local path) or
    "shard-window" (shards permuted, samples permuted within windows of `window` shards; the default, and the only
    order, for a URL). `window` defaults to what `cache_limit` holds three times over (the window read, the next,
    and one a slower rank may still read: limit // (3 x the largest shard)), else to all shards; the loader's
    `window` says what it took, which a resume must pass again. Validation keeps its stored order.

    A URL's shards are fetched whole into `cache_dir` (default ~/.cache/imagenet-feed/<hash of the URL>), shared
    by the ranks of a node and holding at most `cache_limit` bytes of shards (required for a URL). A `cache_limit`
    given with a local path only sets the window, so that it reads the order the URL would.

    `timeout`: the longest any wait for data may last (a shard's download, room in the cache, a claim another
    process holds, a worker's batch); past it the pass raises common.errors.DataTimeout saying what it waited for.
    """
    row = backend(name)
    if split not in SPLITS:
        raise UsageError(f"pipeline: unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if batch_size < 1:
        raise UsageError(f"pipeline: batch_size must be positive, got {batch_size}")
    if accumulate < 1:
        raise UsageError(f"pipeline: accumulate must be positive, got {accumulate}")
    if not timeout > 0:
        raise UsageError(f"pipeline: timeout must be a positive number of seconds, got {timeout!r}")
    try:
        order = check_order(data_path, name, order, window, cache_dir, cache_limit)
        crop_scale = check_pair("crop_scale", crop_scale, most=1)
        crop_ratio = check_pair("crop_ratio", crop_ratio)
    except UsageError as error:
        raise UsageError(f"pipeline: {error}") from None
    options = _options(split=split, batch_size=batch_size, accumulate=accumulate, device=device, dtype=dtype,
                       channels_last=channels_last, crop_size=crop_size, val_size=val_size, workers=workers, seed=seed,
                       strict=strict, max_steps=max_steps, num_classes=num_classes, gpu_decode=row.gpu_decode,
                       order=order, window=window, cache_dir=cache_dir and str(cache_dir), cache_limit=cache_limit,
                       crop_scale=crop_scale, crop_ratio=crop_ratio, timeout=timeout)
    try:
        require(name, cuda=options.device.type == "cuda")
    except ValueError as error:
        raise UsageError(f"pipeline: backend {name} {error}") from None
    return importlib.import_module(row.module).make(data_path, options)


def batches_ahead(name, *, workers=None, device=None):
    """How many batches backend `name`'s loader may prepare before the first is asked for (bench warms up on it)."""
    options = _options(split="train", batch_size=1, accumulate=1, device=device, dtype=torch.float32,
                       channels_last=False, crop_size=1, val_size=1, workers=workers, seed=0, strict=False,
                       max_steps=None, num_classes=1, gpu_decode=backend(name).gpu_decode)
    return importlib.import_module(backend(name).module).batches_ahead(options)


@dataclass(frozen=True)
class Spelling:
    """How a message names an option: make_loader's keyword (order='global'), or a command line's flag (--shuffle
    global) where `flags` maps the keywords to the flags that set them."""
    flags: dict | None = None

    def name(self, keyword):
        return self.flags[keyword] if self.flags else keyword

    def given(self, keyword, value):
        return f"{self.flags[keyword]} {value}" if self.flags else f"{keyword}={value!r}"


KEYWORDS = Spelling()


def check_order(data_path, name, order, window, cache_dir, cache_limit, spelling=KEYWORDS):
    """The train order asked (`order` None: shard-window for a URL, else global) after the rules of the order and the
    cache keywords (make_loader's); UsageError naming, as `spelling` spells it, the one that cannot be."""
    say = spelling.given
    remote = data_path is not None and store.is_url(data_path)
    if order is not None and order not in ORDERS:
        raise UsageError(f"{spelling.name('order')} must be one of {', '.join(ORDERS)}, got {order!r}")
    for keyword, value, unit in (("window", window, "shards"), ("cache_limit", cache_limit, "bytes")):
        if value is not None and not (isinstance(value, numbers.Integral) and value >= 1):
            raise UsageError(f"{spelling.name(keyword)} must be a positive number of {unit}, got {value!r}")
    order = order or ("shard-window" if remote else "global")
    if window is not None and order != "shard-window":
        raise UsageError(f"{say('window', window)} applies to {say('order', 'shard-window')}, not "
                         f"{say('order', order)}")
    if cache_dir is not None and not remote:
        raise UsageError(f"{say('cache_dir', cache_dir)} applies to a URL; {data_path} is read where it is")
    if remote and backend(name).reads_data:  # a backend that reads no data reads no more than the manifest
        if order != "shard-window":
            raise UsageError(f"{say('order', order)} needs every shard at hand; a URL is read window by window "
                             f"through a bounded cache: {say('order', 'shard-window')}")
        if cache_limit is None:
            raise UsageError(f"{spelling.name('cache_limit')} is required for {data_path}: the bytes of shards its "
                             "node-local cache may hold (e.g. 20GB)")
    return order


def check_pair(keyword, value, most=math.inf, spelling=KEYWORDS):
    """`value` as a (min, max) pair of floats with 0 < min <= max <= `most`; UsageError naming `keyword` (as
    `spelling` spells it) else."""
    try:
        low, high = (float(bound) for bound in value)
    except (TypeError, ValueError):
        low = high = math.nan  # not a pair of numbers: fails the check below
    if not 0 < low <= high <= most:
        bounds = "0 < min <= max" + ("" if most == math.inf else f" <= {most:g}")
        raise UsageError(f"{spelling.name(keyword)} must be a (min, max) pair with {bounds}, got {value!r}")
    return low, high


def _options(**given):
    from pipeline.options import LoaderOptions

    return LoaderOptions.build(**given)
