"""Device-resident random batches, made once: the loader-free ceiling of the training step."""
import torch

from pipeline import dataset, sampling
from pipeline.normalize import normalize

IMAGENET_SAMPLES = {"train": 1281167, "val": 50000}


class SyntheticLoader:
    """Yields one normalised random batch over and over, with the real loaders' shapes, dtype, layout and steps.

    The split's size comes from the manifest when `data_path` has one, else ImageNet's, shared over the ranks
    like the real loaders (val's last batch may be short); `steps` sets the steps per epoch instead.
    """

    def __init__(self, data_path, options, *, num_classes=1000):
        samples = IMAGENET_SAMPLES[options.split]
        if data_path is not None and dataset.has_manifest(data_path):
            info = dataset.open_dataset(data_path)
            samples, num_classes = info.split(options.split).samples, len(info.classes)
        self.num_classes = num_classes
        self.samples = samples  # in the split, over all ranks
        self.skipped = 0
        self._sizes = _batch_sizes(samples, options)
        generator = torch.Generator().manual_seed(options.seed)
        size = options.crop_size
        rows = max(self._sizes, default=0)
        pixels = torch.randint(0, 256, (rows, size, size, 3), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, num_classes, (rows,), generator=generator)
        self._images = normalize(pixels.to(options.device), options.dtype, options.channels_last)
        self._labels = labels.to(options.device)

    def __len__(self):
        return len(self._sizes)

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        for size in self._sizes:
            yield self._images[:size], self._labels[:size]


def _batch_sizes(samples, options):
    o = options
    if o.steps is not None:
        return [o.batch_size] * o.steps
    if o.train:
        return [o.batch_size] * sampling.train_steps(samples, o.batch_size, o.world)
    share = len(sampling.rank_share(samples, rank=o.rank, world=o.world))
    return [min(o.batch_size, share - start) for start in range(0, share, o.batch_size)]
