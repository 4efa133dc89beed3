"""`python -m bench loaders`: loader-only train throughput at 224 of each backend against torchvision's.

    python -m bench loaders [--data-path SHARDS] [--batch-size 64] [--workers N] [--steps 24] [--backends ...]

Every backend reads the same prep output: the shards (cpu, dali-cpu, dali), or its DeepLearningExamples
folder layout (the baseline: torchvision ImageFolder + PIL + RandomResizedCrop + RandomHorizontalFlip +
ToTensor + Normalize in a DataLoader with the same worker count). Without --data-path an ImageNet-sized
sample (prep.sample --size imagenet, ~500x375 q90 JPEGs) big enough to time within one epoch is made once
under build/bench/data. Each round builds every loader afresh and drops as many batches as its workers can
have decoded ahead (worker start-up, pipeline build, full queues), then times --steps batches; rounds
alternate between backends and the median counts. Batches are consumed and dropped on this machine's device
(the baseline's are copied there too): this is the loader alone.
Also printed: single-core JPEG decode rates (libjpeg-turbo full size and DCT-scaled, Pillow), to read the
loader figures against.
"""
import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import PIL
import torch

import pipeline
from bench import results
from bench.data import imagenet_sized_shards
from pipeline import dataset
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD, default_workers
from pipeline.readers import open_reader

BASELINE = "torchvision"
DECODE_SAMPLES = 100


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench loaders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", type=Path, help="prep output dir (default: an ImageNet-sized sample "
                        "under build/bench/data)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers(), help="workers/threads (default: cores)")
    parser.add_argument("--steps", type=int, default=24, help="timed batches per run (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median counts (default 3)")
    parser.add_argument("--backends", default=",".join(pipeline.available_backends()),
                        help="comma-separated, from " + ", ".join(pipeline.BACKENDS) + " (default: those usable here)")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in args.backends if b not in pipeline.BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(pipeline.BACKENDS)}")
    for flag in ("batch_size", "workers", "steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    return args


def main(argv=None):
    args = parse_args(argv or [])
    warmup = warmup_batches(args.workers)
    data_path = args.data_path or imagenet_sized_shards(args.batch_size * (warmup + args.steps))
    images = dataset.open_dataset(data_path).split("train").samples
    with tempfile.TemporaryDirectory() as scratch:
        folders = folder_layout(data_path, Path(scratch))
        runs = {name: [] for name in [BASELINE, *args.backends]}
        for round_number in range(args.rounds):
            for name in runs:
                make = (lambda: baseline_loader(folders, args)) if name == BASELINE else \
                    (lambda name=name: pipeline.make_loader(data_path, "train", name, args.batch_size,
                                                            workers=args.workers))
                runs[name].append(images_per_second(make, warmup, args.steps))
                print(f"round {round_number + 1}/{args.rounds} {name:>12}: {runs[name][-1]:8.0f} img/s", flush=True)
    decode = decode_rates(data_path)
    table = summarise(runs)
    print_table(table, decode, args, images)
    path = results.save("loaders", {
        "data_path": str(data_path), "train_images": images, "batch_size": args.batch_size,
        "workers": args.workers, "steps": args.steps, "rounds": args.rounds, "crop_size": 224,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "baseline_pil": PIL.__version__, "loaders": table, "decode_per_core": decode})
    print(f"saved {path}")
    return 0


def warmup_batches(workers):
    """Batches a loader may have ready before the first is asked for: DataLoader workers prefetch two each."""
    return 2 * workers + 2


def images_per_second(make_loader, warmup, steps):
    """Build a loader, drop `warmup` batches, then time `steps` batches (across epochs if the data is small)."""
    loader = make_loader()
    batches = _endless(loader)
    for _ in range(warmup):
        images, _ = next(batches)
    _finished(images)
    seen = 0
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        seen += len(labels)
    _finished(images)
    rate = seen / (time.perf_counter() - start)
    del batches, loader
    return rate


def _finished(images):
    """Wait for the device work behind `images`, so a timing starts and ends on finished batches."""
    if images.is_cuda:
        torch.cuda.synchronize()


def _endless(loader):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def baseline_loader(folders, args):
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = torchvision.datasets.ImageFolder(str(folders / "train"), transform)
    cuda = torch.cuda.is_available()
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=True, pin_memory=cuda)
    return CudaBatches(loader) if cuda else loader


class CudaBatches:
    """The baseline's batches delivered to the GPU, as the other backends deliver theirs."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for images, labels in self.loader:
            yield images.cuda(non_blocking=True), labels.cuda(non_blocking=True)


def folder_layout(data_path, scratch):
    """The prep output's train/ folder layout, or one written into `scratch` from its shards."""
    if (Path(data_path) / "train_list.txt").is_file():
        return Path(data_path)
    data = dataset.open_dataset(data_path)
    reader = open_reader(data.split("train"))
    for i in range(len(reader)):
        jpeg, label = reader.read(i)
        folder = scratch / "train" / data.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:08d}.JPEG").write_bytes(jpeg)
    return scratch


def decode_rates(data_path, repeats=3):
    """Single-core images/s decoding the first DECODE_SAMPLES train JPEGs in full and DCT-scaled; the best of
    `repeats` interleaved passes, as timeit does, since other load only ever slows a pass down."""
    import simplejpeg
    from PIL import Image

    reader = open_reader(dataset.open_dataset(data_path).split("train"))
    jpegs = [bytes(reader.read(i)[0]) for i in range(min(DECODE_SAMPLES, len(reader)))]
    sizes = [simplejpeg.decode_jpeg_header(data)[:2] for data in jpegs]

    def scaled(data, height, width, factor):
        return simplejpeg.decode_jpeg(data, "RGB", fastdct=True, min_height=-(-height // factor),
                                      min_width=-(-width // factor))

    ways = {
        "libjpeg-turbo full, accurate IDCT": lambda d, h, w: simplejpeg.decode_jpeg(d, "RGB"),
        "libjpeg-turbo full, fast IDCT": lambda d, h, w: scaled(d, h, w, 1),
        "libjpeg-turbo DCT-scaled 1/2": lambda d, h, w: scaled(d, h, w, 2),
        "libjpeg-turbo DCT-scaled 1/4": lambda d, h, w: scaled(d, h, w, 4),
        f"Pillow {PIL.__version__} full": lambda d, h, w: Image.open(io.BytesIO(d)).convert("RGB").load(),
    }
    rates = dict.fromkeys(ways, 0.0)
    for _ in range(repeats):
        for name, decode in ways.items():
            start = time.perf_counter()
            for data, (height, width) in zip(jpegs, sizes):
                decode(data, height, width)
            rates[name] = max(rates[name], len(jpegs) / (time.perf_counter() - start))
    return rates


def summarise(runs):
    base = statistics.median(runs[BASELINE])
    return {name: {"images_per_s": statistics.median(rates), "rounds": rates,
                   "ratio_to_baseline": statistics.median(rates) / base} for name, rates in runs.items()}


def print_table(table, decode, args, images):
    print(f"\nloader-only train throughput at 224, batch {args.batch_size}, {args.workers} workers, "
          f"{args.steps} timed batches x {args.rounds} rounds (median), {images} train images; "
          f"baseline on PIL {PIL.__version__}")
    print(f"{'loader':>14} {'img/s':>9} {'x baseline':>11}")
    for name, row in table.items():
        print(f"{name:>14} {row['images_per_s']:9.0f} {row['ratio_to_baseline']:10.2f}x")
    print("\nsingle-core decode")
    for name, rate in decode.items():
        print(f"{name:>34} {rate:7.0f} img/s")
