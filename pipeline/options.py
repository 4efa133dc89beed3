"""The data options a run gives (DataOptions: the flags of the trainer's data group, checked here and only here) and
what every backend is built with (LoaderOptions: those, resolved for one split on this process, with the batch
geometry, device, dtype, rank and world)."""
import math
import numbers
import os
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from common import store
from common.cli import byte_size, integer, positive_number
from common.errors import UsageError
from common.options import SCHEDULE, check_values, flag, given, option, values
from common.placement import launcher_placement
from pipeline import crops
from pipeline.backends import BACKEND_TABLE, BACKENDS, CEILING
from pipeline.sampling import ShardWindows

ORDERS = ("global", "shard-window")
DATA_TIMEOUT_S = 600.0  # the longest wait for data: a shard, room in the cache, a worker's batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How a run reads its data: the backend, the batch, the crops, the order and a URL's cache. A field's flag is
    the trainer's; make_loader takes the group (or a RunConfig, which holds it) and checks it with validate()."""
    TITLE: ClassVar[str] = "data"
    loader: str | None = option(
        "--loader", choices=BACKENDS,
        help=f"default: the first of {', '.join(b.name for b in BACKEND_TABLE if b.default)} that can run here (a "
             f"GPU, DALI); {CEILING} needs no data")
    batch_size: int = option(
        "--batch-size", "--batch_size", "-b", type=integer(1), default=256,
        help="per process; with --multiprocessing-distributed per node, divided among its processes (default: 256)")
    workers: int | None = option(
        "--workers", "-j", type=integer(1),
        help="loader workers per process, at most the cores it may use; with --multiprocessing-distributed per "
             "node, divided among its processes (default: the cores shared by the processes of this node)")
    crop_size: int = option(
        "--crop-size", "--crop_size", "--max-res", "--max_res", type=integer(1), default=224, keep=SCHEDULE,
        help="training crop (with --min-res, the largest of the ramp) (default: 224)")
    val_size: int = option("--val-size", "--val_size", type=integer(1), default=256,
                           help="validation resize before the centre crop")
    val_crop_size: int | None = option(
        "--val-crop-size", "--val_crop_size", "--val-res", type=integer(1),
        help="validation centre crop, independent of the training crop: test-time resolution (FFCV trains at 192 "
             "and validates at 256) (default: --crop-size)")
    crop_scale: tuple = option(
        "--crop-scale", "--crop_scale", type=float, nargs=2, default=crops.SCALE, metavar=("MIN", "MAX"),
        keep=SCHEDULE, help="RandomResizedCrop's share of the image area (default: 0.08 1)")
    crop_ratio: tuple = option(
        "--crop-ratio", "--crop_ratio", type=float, nargs=2, default=crops.RATIO, metavar=("MIN", "MAX"),
        keep=SCHEDULE, help="RandomResizedCrop's aspect ratios (default: 3/4 4/3)")
    order: str | None = option(
        "--shuffle", choices=ORDERS, keep=SCHEDULE,
        help="global: one permutation of the split per epoch (default for local data); shard-window: shards "
             "permuted, samples shuffled within windows of --shuffle-window shards, so a bounded cache suffices "
             "(default, and the only choice, for a URL)")
    window: int | None = option(
        "--shuffle-window", "--shuffle_window", type=integer(1), metavar="SHARDS", keep=SCHEDULE,
        help="shards per shuffle window (default: what --cache-limit holds three times over)")
    cache_dir: str | None = option(
        "--cache-dir", "--cache_dir",
        help="node-local cache of a URL's shards, shared by the node's ranks (default: under ~/.cache/imagenet-feed)")
    cache_limit: int | None = option("--cache-limit", "--cache_limit", type=byte_size, metavar="SIZE",
                                     help="most bytes the cache holds, e.g. 20GB (needed with a URL)")
    data_timeout: float = option(
        "--data-timeout", "--data_timeout", type=positive_number, default=DATA_TIMEOUT_S, metavar="SECONDS",
        help="longest wait for data (a shard's download, room in the cache, a loader worker's batch, another rank); "
             "past it every rank stops with one line saying what it waited for (default: 600)")

    def validate(self, data_path, cuda=None):
        """These options checked against each other, the data path and the machine (`cuda`: whether the run has a
        CUDA device; None: whether this one has), with the defaults that depend on them resolved (loader, order,
        val_crop_size); UsageError naming the flag that cannot be, MissingDependency for a library not installed."""
        from pipeline import backend, default_backend, require

        check_values(self)
        cuda = torch.cuda.is_available() if cuda is None else cuda
        loader = self.loader or default_backend(cuda)
        try:
            require(loader, cuda=cuda)
        except UsageError as error:
            raise UsageError(f"{given(DataOptions, 'loader', loader)} {error}") from None
        val_crop = self.val_crop_size or self.crop_size
        if self.val_size < val_crop:
            raise UsageError(f"--val-size {self.val_size} is below the validation crop {val_crop} (--val-crop-size, "
                             "else --crop-size): validation resizes the shorter side to --val-size, then takes that "
                             "centre crop of it")
        return replace(self, loader=loader, val_crop_size=val_crop, order=self._order(data_path, backend(loader)),
                       crop_scale=_pair(self, "crop_scale", most=1), crop_ratio=_pair(self, "crop_ratio"),
                       cache_dir=self.cache_dir and str(self.cache_dir))

    def _order(self, data_path, row):
        """The train order asked (None: shard-window for a URL, else global) after the rules of the order and the
        cache."""
        def say(name, value):
            return given(DataOptions, name, value)

        remote = data_path is not None and store.is_url(data_path)
        order = self.order or ("shard-window" if remote else "global")
        if self.window is not None and order != "shard-window":
            raise UsageError(f"{say('window', self.window)} applies to {say('order', 'shard-window')}, not "
                             f"{say('order', order)}")
        if self.cache_dir is not None and not remote:
            raise UsageError(f"{say('cache_dir', self.cache_dir)} applies to a URL; {data_path} is read where it is")
        if remote and row.reads_data:  # a backend that reads no data reads no more than the manifest
            if order != "shard-window":
                raise UsageError(f"{say('order', order)} needs every shard at hand; a URL is read window by window "
                                 f"through a bounded cache: {say('order', 'shard-window')}")
            if self.cache_limit is None:
                raise UsageError(f"--cache-limit is required for {data_path}: the bytes of shards its node-local "
                                 "cache may hold (e.g. 20GB)")
        return order


def _pair(options, name, most=math.inf):
    """Field `name` as a (min, max) pair of floats with 0 < min <= max <= `most`; UsageError naming its flag else."""
    value = getattr(options, name)
    try:
        low, high = (float(bound) for bound in value)
    except (TypeError, ValueError):
        low = high = math.nan  # not a pair of numbers: fails the check below
    if not 0 < low <= high <= most:
        bounds = "0 < min <= max" + ("" if most == math.inf else f" <= {most:g}")
        raise UsageError(f"{flag(DataOptions, name)} must be a (min, max) pair with {bounds}, got {value!r}")
    return low, high


@dataclass(frozen=True, kw_only=True)
class LoaderOptions(DataOptions):
    """DataOptions resolved (validate) for one split on this process, and what else a backend is built with."""
    split: str
    accumulate: int    # micro-batches per optimizer step: a train pass runs whole global steps of them
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    seed: int
    strict: bool
    max_steps: int | None  # the cap on the steps of a pass
    num_classes: int   # the labels of a backend without a dataset (synthetic without one)
    gpu_decode: bool   # the dali backend: DALI's "mixed" decoder
    rank: int
    world: int
    node_ranks: tuple  # the ranks on this node, which share its cache
    shard_order: ShardWindows | None = None  # the order resolved against the data (pipeline.reading); None: global

    @property
    def train(self):
        return self.split == "train"

    @classmethod
    def build(cls, data, split, *, device, **given_):
        """`data` (validated DataOptions, or an object holding them) for `split` on this process and `device`. Its
        crop_size is this split's crop: the train crop's largest side (set_resolution may lower it per pass), which
        sizes the batch memory, or validation's centre crop."""
        rank, world = distributed_rank_world()
        settled = values(DataOptions, data)
        if split != "train":
            settled["crop_size"] = settled["val_crop_size"] or settled["crop_size"]
        settled["workers"] = settled["workers"] or default_workers()
        return cls(**settled, split=split, device=resolve_device(device), rank=rank, world=world,
                   node_ranks=node_ranks(rank, world), **given_)


def check_resolution(options, size):
    """ValueError unless a train pass of `options` can yield `size` x `size` images: batch memory holds crop_size."""
    if not options.train:
        raise ValueError("pipeline: set_resolution applies to train passes only; validation crops to crop_size")
    if not (isinstance(size, numbers.Integral) and 1 <= size <= options.crop_size):
        raise ValueError(f"pipeline: set_resolution size must be a whole number from 1 to crop_size="
                         f"{options.crop_size} (the largest, which sizes the batch memory), got {size!r}")


def resolve_device(device):
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def distributed_rank_world():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def node_ranks(rank, world):
    """The ranks on this node, which share its cache, as the launcher placed them (common.placement). Where it
    numbers them otherwise than consecutively, or none says, every rank is taken to share the node: a superset, so
    the cache fetches shards other nodes' ranks read too, but every rank of a node plans the same shards."""
    place = launcher_placement()
    first = rank - place.local_rank
    if place.consecutive and 0 <= first <= rank < first + place.local_world <= world:
        return tuple(range(first, first + place.local_world))
    return tuple(range(world))


def default_workers():
    """The cores this process may use, shared among the processes its launcher put on this node. srun and mpirun may
    have bound each process to cores of its own: when local_world sets of this size fit on the node, it has its share
    already."""
    cores = len(os.sched_getaffinity(0))
    place = launcher_placement()
    local_world = place.local_world or 1
    if place.may_bind_cores and cores * local_world <= os.cpu_count():
        return cores
    return max(1, cores // local_world)
