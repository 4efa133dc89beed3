"""Device-resident random batches, made once: the loader-free ceiling of the training step."""
import torch

from common import store
from common.layout import has_manifest
from pipeline import dataset, sampling
from pipeline.normalize import normalize
from pipeline.options import check_resolution

IMAGENET_SAMPLES = {"train": 1281167, "val": 50000}


def make(data_path, options):
    """The split's size and classes from the manifest when `data_path` has one (a URL must), else ImageNet's."""
    samples, num_classes = IMAGENET_SAMPLES[options.split], options.num_classes
    if data_path is not None and (store.is_url(data_path) or has_manifest(data_path)):
        info = dataset.open_dataset(data_path)
        samples, num_classes = info.split(options.split).samples, len(info.classes)
    return SyntheticLoader(samples, num_classes, options)


def batches_ahead(options):
    return 0


class SyntheticLoader:
    """Yields one normalised random batch over and over, with the real loaders' shapes, dtype, layout and steps:
    the split's samples shared over the ranks like the real loaders, from set_epoch's `start` (val's last batch may
    be short); `max_steps` sets the steps of a pass instead. set_resolution crops the top left of the crop_size
    batch, made contiguous once per call, not per step."""

    def __init__(self, samples, num_classes, options):
        self.num_classes = num_classes
        self.samples = samples  # in the split, over all ranks
        self.skipped = 0
        self.ahead = batches_ahead(options)
        self.window = self.shard_order = None  # it reads nothing, so it has no order
        self.cache = None
        self._options = options
        self._sizes = _batch_sizes(samples, options, start=0)  # a whole pass: no later one has larger batches
        generator = torch.Generator().manual_seed(options.seed)
        size = options.crop_size
        rows = max(self._sizes, default=0)
        pixels = torch.randint(0, 256, (rows, size, size, 3), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, num_classes, (rows,), generator=generator)
        self._largest = normalize(pixels.to(options.device), options.dtype, options.channels_last)
        self._images = self._largest
        self._labels = labels.to(options.device)

    def __len__(self):
        return len(self._sizes)

    def set_epoch(self, epoch, start=0):
        sampling.check_start(self.samples, self._options, start)
        self._sizes = _batch_sizes(self.samples, self._options, start)

    def set_resolution(self, size):
        check_resolution(self._options, size)
        layout = torch.channels_last if self._options.channels_last else torch.contiguous_format
        self._images = self._largest[..., :size, :size].contiguous(memory_format=layout)

    def __iter__(self):
        images = self._images  # as the pass starts: a set_resolution during it waits for the next
        for rows in self._sizes:
            yield images[:rows], self._labels[:rows]


def _batch_sizes(samples, options, start):
    o = options
    if o.max_steps is not None:
        return [o.batch_size] * o.max_steps
    if o.train:
        return [o.batch_size] * sampling.pass_steps(samples, o, start)
    share = len(sampling.rank_share(samples, rank=o.rank, world=o.world))
    return [min(o.batch_size, share - first) for first in range(0, share, o.batch_size)]
