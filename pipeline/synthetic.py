"""Device-resident random batches, made once: the loader-free ceiling of the training step."""
import torch

from pipeline import dataset
from pipeline.normalize import normalize

IMAGENET_SAMPLES = {"train": 1281167, "val": 50000}


class SyntheticLoader:
    """Yields the same normalised batch `len()` times per epoch; shapes, dtype and layout as the real loaders.

    Steps per epoch follow the dataset's manifest when `data_path` has one (else ImageNet's sizes), split
    over the ranks like the real loaders; `steps` overrides them.
    """

    def __init__(self, data_path, options, *, num_classes=1000, steps=None):
        samples = IMAGENET_SAMPLES[options.split]
        if data_path is not None and dataset.has_manifest(data_path):
            info = dataset.open_dataset(data_path)
            samples, num_classes = info.split(options.split).samples, len(info.classes)
        per_rank = samples // options.world
        self.num_classes = num_classes
        self.skipped = 0
        self._steps = steps if steps is not None else max(1, per_rank // options.batch_size)
        generator = torch.Generator().manual_seed(options.seed)
        size = options.crop_size
        pixels = torch.randint(0, 256, (options.batch_size, size, size, 3), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, num_classes, (options.batch_size,), generator=generator)
        self._images = normalize(pixels.to(options.device), options.dtype, options.channels_last)
        self._labels = labels.to(options.device)

    def __len__(self):
        return self._steps

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        for _ in range(self._steps):
            yield self._images, self._labels
