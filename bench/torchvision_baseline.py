"""The loader `bench loaders` measures every backend against: torchvision's ImageFolder + PIL + RandomResizedCrop +
RandomHorizontalFlip + ToTensor + Normalize in a DataLoader, reading the prep output's folder layout, its batches
copied to the GPU where there is one."""
from pathlib import Path

import torch

from common.layout import LISTS
from pipeline import dataset
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD
from pipeline.readers import open_reader
from prep.folders import make_dirs, write_image

BASELINE = "torchvision"
PREFETCH = 2  # torch DataLoader's default prefetch_factor, which the baseline keeps


def baseline_loader(folders, args, batches):
    """The baseline over the folder layout in `folders`, with passes of `batches` batches of args.batch_size read by
    args.workers workers."""
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = torchvision.datasets.ImageFolder(str(folders / "train"), transform)
    cuda = torch.cuda.is_available()
    sampler = torch.utils.data.RandomSampler(train, num_samples=batches * args.batch_size)  # the pass, as `steps=`
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=args.workers, persistent_workers=True, pin_memory=cuda,
                                         prefetch_factor=PREFETCH)
    return CudaBatches(loader) if cuda else loader


class CudaBatches:
    """The baseline's batches delivered to the GPU, as the other backends deliver theirs."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for images, labels in self.loader:
            yield images.cuda(non_blocking=True), labels.cuda(non_blocking=True)


def folder_layout(data_path, scratch):
    """The prep output's train/ folder layout, or one written into `scratch` from its shards, as prep writes it."""
    if (Path(data_path) / LISTS["train"]).is_file():
        return Path(data_path)
    data = dataset.open_dataset(data_path)
    reader = open_reader(data.split("train"))
    make_dirs(scratch, ["train"], data.classes)
    for i in range(len(reader)):
        jpeg, label = reader.read(i)
        write_image(scratch, "train", data.classes[label], f"{i:08d}", jpeg)
    return scratch
