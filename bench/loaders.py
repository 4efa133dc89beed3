"""`python -m bench loaders`: loader-only train throughput at 224 of each backend against torchvision's.

    python -m bench loaders [--data-path SHARDS] [--batch-size 64] [--workers N] [--steps 24] [--backends ...]
    python -m bench loaders --remote [--data-path SHARDS] [--batch-size 64] [--workers N] [--rounds 3] [--backends ...]

Every backend that decodes reads the same prep output: the shards (cpu, dali-cpu, dali), or its
DeepLearningExamples folder layout (the baseline: torchvision ImageFolder + PIL + RandomResizedCrop +
RandomHorizontalFlip + ToTensor + Normalize in a DataLoader with the same worker count). The synthetic backend
decodes nothing (it hands out one resident batch), so it has no row here; `bench train` uses it as the compute
ceiling. Without --data-path an ImageNet-sized sample (prep.sample --size imagenet, ~500x375 q90 JPEGs) big
enough for one timed pass is made once under build/bench/data.

Each round builds every loader afresh, its passes exactly the batches the round reads, and times it through the
loader interface (make_loader, set_epoch, iter): the set-up of its first pass (building it included, up to the
first batch); the throughput over --steps batches, once as many as its workers can have decoded ahead are
dropped (full queues); the set-up of its next pass (set_epoch + iter to the first batch: what every further
epoch pays). For each pipeline backend, also the set-up of a resumed pass: set_epoch(0, start) + iter to the first
batch on a freshly built loader (the build not counted), once from the epoch's start and once from 90 % of it,
and their ratio (a resume must not read its way to `start`). Rounds alternate between backends and the medians
count. Batches are consumed and dropped on this machine's device (the baseline's are copied there too): this is
the loader alone.
Also printed: single-core JPEG decode rates (libjpeg-turbo full size and DCT-scaled, Pillow), to read the
loader figures against.

With --remote it measures instead a URL's data against the same data on local disk, in the same process: it starts a
loopback S3-compatible server (moto), uploads the shards (by default an ImageNet-sized sample in shards of
REMOTE_SHARD images, made once under build/bench/remote), and reads them through the node-local cache limited to
REMOTE_CACHE_SHARE of the data, beside the local shards read in the same shard-window order, for REMOTE_EPOCHS
epochs a round, alternating. It gives the remote img/s over local img/s after each epoch's first window (the
cache's cold start), the bytes downloaded per epoch over the dataset's bytes, and the peak bytes of the cache
directory (sampled every millisecond) over its limit. It also gives the node's download rate (bench.downloads): the
train shards fetched into an empty cache by one node of 1 local rank and of 4 (spawned processes, one gloo group),
MB/s, downloads per rank (each shard once per node, checked) and the 4-rank/1-rank ratio. `--remote --data-path
s3://bucket/prefix` (or gs://, https://) reads your store instead of the loopback server, beside a local copy of its
data fetched first.
"""
import contextlib
import importlib.util
import io
import json
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import PIL
import torch

import pipeline
from bench import downloads, results
from bench.data import imagenet_sized_shards, prepped_sample
from common import store
from common.cli import Parser, integer, prepped_images
from common.digest import file_digest
from common.layout import LISTS, MANIFEST, read_manifest
from pipeline import dataset
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD, default_workers
from pipeline.readers import open_reader

BASELINE = "torchvision"
BASELINE_PREFETCH = 2  # torch DataLoader's default prefetch_factor, which the baseline keeps
LOADERS = pipeline.DATA_BACKENDS
MEASURES = ("images_per_s", "first_pass_setup_s", "later_pass_setup_s")
RESUME_AT = 0.9  # the resume position, a share of the epoch
RESUME_MEASURES = ("setup_from_0_s", "setup_from_90pct_s")  # the pass set-up from the start, from RESUME_AT
RESUME_BATCHES = 1  # both resumed passes stop after their first batch: they differ in their start alone
DECODE_SAMPLES = 100
DALI_NEEDS = "the dali backends need NVIDIA DALI (pip install 'imagenet-feed[dali]'), dali a GPU as well"
REMOTE_IMAGES, REMOTE_SHARD = 3200, 100  # the default --remote data: 32 train shards
REMOTE_CACHE_SHARE = 0.3  # the cache limit, a share of the train shards' bytes
LOOPBACK = "s3:// on moto's server, 127.0.0.1"
REMOTE_EPOCHS = 2  # a round: the first epoch from a cold cache, the next from what it kept


def parse_args(argv):
    parser = Parser("bench loaders", prog="python -m bench loaders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", help="prep output dir (default: an ImageNet-sized sample under "
                        "build/bench/data); with --remote also a URL, which is then read instead of the loopback "
                        "server, beside a local copy fetched first")
    parser.add_argument("--batch-size", type=integer(1), default=64)
    parser.add_argument("--workers", type=integer(1), default=default_workers(),
                        help="workers/threads (default: cores)")
    parser.add_argument("--steps", type=integer(1), default=24, help="timed batches per run (default 24)")
    parser.add_argument("--rounds", type=integer(1), default=3,
                        help="alternating rounds; the median counts (default 3)")
    usable = [backend for backend in pipeline.available_backends() if backend in LOADERS]
    parser.add_argument("--backends", default=",".join(usable),
                        help="comma-separated, from " + ", ".join(LOADERS) + " (default: those usable here)")
    parser.add_argument("--remote", action="store_true",
                        help="read the data from a loopback S3 server through the node-local cache, beside local disk")
    results.add_option(parser)
    args = parser.parse_args(argv)
    results.check_option(parser, args)
    args.backends = [b for b in args.backends.split(",") if b]
    if not args.backends:
        parser.error(f"--backends: none named; choose from {', '.join(LOADERS)}")
    if pipeline.CEILING in args.backends:
        parser.error(f"--backends: {pipeline.CEILING} decodes nothing (it hands out one resident batch), so it is no "
                     "loader to time against torchvision; `python -m bench train` uses it as the compute ceiling")
    unknown = [b for b in args.backends if b not in LOADERS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(LOADERS)}")
    unusable = [b for b in args.backends if b not in usable]
    if unusable:  # an optional part missing: one line saying what to install
        parser.error(f"--backends {','.join(unusable)} cannot run here: {DALI_NEEDS}")
    if args.data_path and store.is_url(args.data_path):
        if not args.remote:
            parser.error(f"--data-path {args.data_path} is a URL: it is measured with --remote")
    elif args.data_path:
        args.data_path = Path(args.data_path)
        if args.remote:
            parser.prep_output("--data-path", args.data_path)
        else:
            check_data(parser, args)
    if args.remote and not all(importlib.util.find_spec(name) for name in ("s3fs", "moto")):
        parser.error("--remote needs s3fs and moto[server]: pip install 'imagenet-feed[remote]' 'moto[server]'")
    return args


def check_data(parser, args):
    """--data-path is a prep output with enough train images for one timed pass."""
    found = parser.prep_output("--data-path", args.data_path)
    images, batches = prepped_images(found, "train"), pass_batches(args)
    if images // args.batch_size < batches:
        parser.error(f"--data-path {args.data_path} has {images} train images, {images // args.batch_size} "
                     f"batches of {args.batch_size}; a timed pass reads {batches} ({batches - args.steps} to fill "
                     "the queues, then --steps): give more data or fewer --steps")


def main(argv=None):
    args = parse_args(argv or [])
    if args.remote:
        return remote_main(args)
    data_path = args.data_path or imagenet_sized_shards(args.batch_size * pass_batches(args))
    images = dataset.open_dataset(data_path).split("train").samples
    start = resume_start(images, args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        folders = folder_layout(data_path, Path(scratch))
        runs = {name: [] for name in [BASELINE, *args.backends]}
        for round_number in range(args.rounds):
            for name in runs:
                runs[name].append(time_round(name, data_path, folders, args, start, round_number))
                print(f"round {round_number + 1}/{args.rounds} {name:>12}: {format_run(runs[name][-1])}", flush=True)
    decode = decode_rates(data_path)
    table = summarise(runs)
    print_table(table, decode, args, images)
    print_resume_table(table, images, start)
    path = results.save("loaders", out_dir=args.results, payload={
        "data_path": str(data_path), "train_images": images, "batch_size": args.batch_size,
        "workers": args.workers, "steps": args.steps, "rounds": args.rounds, "crop_size": 224, "resume_start": start,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "baseline_pil": PIL.__version__, "loaders": table, "decode_per_core": decode})
    print(f"saved {path}")
    return 0


def time_round(name, data_path, folders, args, start, round_number):
    """One round's measures of loader `name`: MEASURES, and for a pipeline backend RESUME_MEASURES (which of the two
    resumed passes goes first alternates with the rounds)."""
    warmup = warmup_batches(name, args.workers)
    run = time_loader(loader_maker(name, data_path, folders, args, batches=warmup + args.steps), warmup, args.steps)
    if name != BASELINE:
        make = loader_maker(name, data_path, folders, args, batches=RESUME_BATCHES)
        starts = dict(zip(RESUME_MEASURES, (0, start)))
        order = reversed(RESUME_MEASURES) if round_number % 2 else RESUME_MEASURES  # a drifting VM favours neither
        run.update({measure: time_resumed_pass(make, starts[measure]) for measure in order})
    return run


def resume_start(images, batch_size):
    """The sample RESUME_AT of the epoch in, or nearer its start where that would leave no whole batch."""
    return min(int(RESUME_AT * images), images - batch_size)


def loader_maker(name, data_path, folders, args, batches):
    """A function that builds loader `name` (or the baseline) with passes of `batches` batches."""
    if name == BASELINE:
        return lambda: baseline_loader(folders, args, batches)
    return lambda: pipeline.make_loader(data_path, "train", name, args.batch_size, workers=args.workers,
                                        max_steps=batches)


def warmup_batches(name, workers):
    """The batches dropped before timing: those the loader may have prepared before the first was asked for (its
    own count; the baseline's DataLoader prefetches BASELINE_PREFETCH per worker), and the first."""
    ahead = BASELINE_PREFETCH * workers if name == BASELINE else pipeline.batches_ahead(name, workers=workers)
    return ahead + 1


def pass_batches(args):
    """The longest pass of this run's loaders: its warm-up, then the timed --steps."""
    return max(warmup_batches(name, args.workers) for name in (BASELINE, *args.backends)) + args.steps


def time_loader(make_loader, warmup, steps):
    """Build a loader whose passes are `warmup + steps` batches long and time, through its interface: the set-up
    of its first pass (building it included), images/s over the pass's last `steps` batches once `warmup` are
    dropped, and the set-up of its next pass. Returns {measure: value} for MEASURES."""
    started = time.perf_counter()
    loader = make_loader()
    _, batches = _start_pass(loader, epoch=0)
    first_pass_setup = time.perf_counter() - started
    for _ in range(warmup - 1):  # the first batch is one of them
        images, _ = next(batches)
    _finished(images)
    seen = 0
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        seen += len(labels)
    _finished(images)
    rate = seen / (time.perf_counter() - start)
    if next(batches, None) is not None:
        raise RuntimeError("bench loaders: a pass was longer than the batches it was built for")
    later_pass_setup, batches = _start_pass(loader, epoch=1)
    del batches, loader
    return dict(zip(MEASURES, (rate, first_pass_setup, later_pass_setup)))


def time_resumed_pass(make_loader, start):
    """The set-up of a pass from sample `start` of the epoch (set_epoch + iter to the first batch) on a freshly
    built loader, its build not counted."""
    loader = make_loader()
    setup, batches = _start_pass(loader, epoch=0, start=start)
    del batches, loader
    return setup


def _start_pass(loader, epoch, **position):
    """set_epoch(epoch, **position) + iter + the first batch: the seconds that took, and the pass's further batches.
    `position` is start=... for a pass that starts inside the epoch."""
    started = time.perf_counter()
    if hasattr(loader, "set_epoch"):  # the torchvision baseline has none
        loader.set_epoch(epoch, **position)
    batches = iter(loader)
    first = next(batches)
    _finished(first[0])
    return time.perf_counter() - started, batches


def _finished(images):
    """Wait for the device work behind `images`, so a timing starts and ends on finished batches."""
    if images.is_cuda:
        torch.cuda.synchronize()


def baseline_loader(folders, args, batches):
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
                                         prefetch_factor=BASELINE_PREFETCH)
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
    if (Path(data_path) / LISTS["train"]).is_file():
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


def format_run(run):
    resumed = (f", resumed pass set-up {run['setup_from_0_s']:.2f} s from 0, {run['setup_from_90pct_s']:.2f} s from "
               f"{RESUME_AT:.0%}") if "setup_from_0_s" in run else ""
    return (f"{run['images_per_s']:8.0f} img/s, set-up {run['first_pass_setup_s']:.2f} s first pass, "
            f"{run['later_pass_setup_s']:.2f} s later pass{resumed}")


def summarise(runs):
    """{loader: [{measure: value} per round]} -> {loader: the median of each measure, the throughput's ratio to
    the baseline's, a pipeline backend's resume ratio (set-up from RESUME_AT / from 0), and the rounds}."""
    medians = {name: {measure: statistics.median(run[measure] for run in rounds)
                      for measure in (*MEASURES, *RESUME_MEASURES) if measure in rounds[0]}
               for name, rounds in runs.items()}
    base = medians[BASELINE]["images_per_s"]
    return {name: {**row, "ratio_to_baseline": row["images_per_s"] / base, **resume_ratio(row), "rounds": runs[name]}
            for name, row in medians.items()}


def resume_ratio(row):
    if "setup_from_0_s" not in row:
        return {}
    return {"resume_setup_ratio": row["setup_from_90pct_s"] / row["setup_from_0_s"]}


def print_table(table, decode, args, images):
    print(f"\nloader-only train throughput at 224, batch {args.batch_size}, {args.workers} workers, "
          f"{args.steps} timed batches x {args.rounds} rounds (median), {images} train images; "
          f"baseline on PIL {PIL.__version__}")
    print("set-up: set_epoch + iter to the first batch, in the first pass of a fresh loader (building it "
          "included) and in a later pass")
    print(f"{'loader':>14} {'img/s':>9} {'x baseline':>11} {'set-up: first pass':>19} {'later pass':>11}")
    for name, row in table.items():
        print(f"{name:>14} {row['images_per_s']:9.0f} {row['ratio_to_baseline']:10.2f}x "
              f"{row['first_pass_setup_s']:17.2f} s {row['later_pass_setup_s']:9.2f} s")
    print("\nsingle-core decode")
    for name, rate in decode.items():
        print(f"{name:>34} {rate:7.0f} img/s")


def print_resume_table(table, images, start):
    print(f"\nresumed pass set-up: set_epoch(0, start) + iter to the first batch on a fresh loader (its build not "
          f"counted), from the epoch's start and from sample {start} of {images} ({start / images:.0%})")
    print(f"{'loader':>14} {'from 0':>9} {'from ' + format(start / images, '.0%'):>11} {'ratio':>7}")
    for name, row in table.items():
        if "resume_setup_ratio" in row:
            print(f"{name:>14} {row['setup_from_0_s']:7.2f} s {row['setup_from_90pct_s']:9.2f} s "
                  f"{row['resume_setup_ratio']:6.2f}x")


# --- --remote: a URL's data through the node-local cache against local disk ----------------------------------------

def remote_main(args):
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory())
        if args.data_path and store.is_url(args.data_path):
            url, where = args.data_path, args.data_path
            data_path = local_copy(url, Path(scratch) / "local")
        else:
            from bench.loopback import make_bucket, s3_server

            stack.enter_context(s3_server())
            data_path = args.data_path or remote_shards()
            url, where = upload(data_path, store.join(make_bucket("bench"), "shards")), LOOPBACK
        return _measure_remote(args, url, where, data_path, scratch)


def _measure_remote(args, url, where, data_path, scratch):
    train = read_manifest(data_path)["splits"]["train"]
    data_bytes = sum(shard["bytes"] for shard in train["shards"])
    limit = int(REMOTE_CACHE_SHARE * data_bytes)
    fetch = fetch_cost(url, train, Path(scratch) / "fetch")
    node = downloads.measure(url, train, Path(scratch) / "downloads", args.rounds)
    runs = {name: [] for name in args.backends}
    for round_number in range(args.rounds):
        for name in runs:
            cache_dir = Path(scratch) / f"cache-{round_number}-{name}"
            runs[name].append(time_remote_round(name, data_path, url, limit, cache_dir, args))
            print(f"round {round_number + 1}/{args.rounds} {name:>9}: "
                  f"{format_remote(runs[name][-1], data_bytes, limit)}", flush=True)
    table = {name: summarise_remote(rounds, data_bytes, limit) for name, rounds in runs.items()}
    print_remote_table(table, args, train, data_bytes, limit, where)
    print_fetch_cost(fetch, table, train)
    downloads.print_table(node, train, where, args.rounds)
    path = results.save("loaders-remote", out_dir=args.results, payload={
        "data_path": str(data_path), "url": where, "train_images": train["samples"],
        "train_shards": len(train["shards"]), "data_bytes": data_bytes, "cache_limit": limit,
        "batch_size": args.batch_size, "workers": args.workers, "rounds": args.rounds, "epochs": REMOTE_EPOCHS,
        "crop_size": 224, "loaders": table, "fetch_alone": fetch, "node_downloads": node})
    print(f"saved {path}")
    return 0


def remote_shards():
    """An ImageNet-sized sample in shards of REMOTE_SHARD images (enough for windows), made once."""
    return prepped_sample(Path("build/bench/remote"), ["--shard-size", str(REMOTE_SHARD)], classes=10,
                          train_per_class=REMOTE_IMAGES // 10, val_per_class=4, size="imagenet")


def local_copy(url, folder):
    """The prep output at `url` fetched into `folder`, manifest last: the local-disk side of the comparison."""
    folder.mkdir()
    manifest = store.read_text(store.join(url, MANIFEST))
    for split in json.loads(manifest)["splits"].values():
        for shard in split["shards"]:
            for name in (shard["name"], shard["index"]):
                store.download(store.join(url, name), folder / name)
    (folder / MANIFEST).write_text(manifest)
    return folder


def upload(data_path, url):
    """The prep output's shards, indexes and manifest (last) at `url`."""
    files = [path for path in Path(data_path).iterdir() if path.suffix in (".tar", ".idx")]
    for path in [*files, Path(data_path) / MANIFEST]:
        store.upload(path, store.join(url, path.name))
    return url


def time_remote_round(name, data_path, url, limit, cache_dir, args):
    """A fresh local loader and a fresh remote one (an empty cache), the same shard-window order; per epoch,
    alternately, each one's images/s after the epoch's first window, and the remote's bytes downloaded; the peak
    bytes of the cache directory over the round."""
    def make(path, **options):
        return pipeline.make_loader(path, "train", name, args.batch_size, workers=args.workers, cache_limit=limit,
                                    **options)

    local, remote = make(data_path, order="shard-window"), make(url, cache_dir=cache_dir)
    largest = max(shard["samples"] for shard in read_manifest(data_path)["splits"]["train"]["shards"])
    skip = math.ceil(remote.window * largest / args.batch_size)
    run = {"local_images_per_s": [], "remote_images_per_s": [], "downloaded_bytes": [], "window": remote.window}
    with DirectoryBytes(cache_dir / "shards") as held:
        for epoch in range(REMOTE_EPOCHS):
            run["local_images_per_s"].append(time_epoch(local, epoch, skip))
            before = remote.cache.stats.downloaded_bytes
            run["remote_images_per_s"].append(time_epoch(remote, epoch, skip))
            run["downloaded_bytes"].append(remote.cache.stats.downloaded_bytes - before)
    run["peak_cache_bytes"] = held.peak
    run["peak_reserved_bytes"] = remote.cache.stats.peak_bytes
    return run


def fetch_cost(url, train, folder):
    """Every train shard fetched once and checked against its sha256, alone: wall seconds, and the CPU seconds this
    process spent downloading and hashing (what the cache's fetches take from the cores that decode)."""
    folder.mkdir()
    began, cpu = time.perf_counter(), _cpu_seconds()
    for shard in train["shards"]:
        store.download(store.join(url, shard["name"]), folder / shard["name"])
    downloaded, cpu_downloading = time.perf_counter(), _cpu_seconds() - cpu
    for shard in train["shards"]:
        if file_digest(folder / shard["name"]) != shard["sha256"]:  # as the cache checks a copy
            raise SystemExit(f"bench: {url}/{shard['file']} came back changed")
    return {"seconds": time.perf_counter() - began, "download_seconds": downloaded - began,
            "download_cpu_s": cpu_downloading, "hash_cpu_s": _cpu_seconds() - cpu - cpu_downloading}


def _cpu_seconds():
    times = os.times()
    return times.user + times.system


def print_fetch_cost(fetch, table, train):
    cores = len(os.sched_getaffinity(0))
    cost = fetch["download_cpu_s"] + fetch["hash_cpu_s"]
    print(f"fetching the {len(train['shards'])} train shards once, alone: {fetch['seconds']:.2f} s; this process's "
          f"CPU: {fetch['download_cpu_s']:.2f} s downloading + {fetch['hash_cpu_s']:.2f} s checking sha256 (the "
          "server's own CPU besides)")
    for name, row in table.items():
        epoch_s = train["samples"] / row["epochs"][0]["local_images_per_s"]
        print(f"{name:>10}: a local epoch is {epoch_s:.2f} s x {cores} cores = {epoch_s * cores:.1f} core-s; "
              f"fetching it takes {cost / (epoch_s * cores):.0%} of them")


def time_epoch(loader, epoch, skip):
    """Images/s of a whole pass once its first `skip` batches are done."""
    loader.set_epoch(epoch)
    seen, started = 0, None
    for step, (images, labels) in enumerate(loader):
        if step == skip - 1:
            _finished(images)
            started = time.perf_counter()
        elif step >= skip:
            seen += len(labels)
    _finished(images)
    return seen / (time.perf_counter() - started)


class DirectoryBytes:
    """The most bytes the files of a folder held (`peak`), sampled about every millisecond by a thread while entered
    (`samples` times)."""

    def __init__(self, folder):
        self.folder = folder
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._bytes())
            self.samples += 1

    def _bytes(self):
        total = 0
        for path in self.folder.glob("*") if self.folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):  # evicted or renamed since the listing
                total += path.stat().st_size
        return total


def remote_ratios(run, data_bytes, limit):
    return {"speed_ratio": [remote / local for remote, local in zip(run["remote_images_per_s"],
                                                                      run["local_images_per_s"])],
            "downloaded_ratio": [nbytes / data_bytes for nbytes in run["downloaded_bytes"]],
            "peak_cache_ratio": run["peak_cache_bytes"] / limit}


def format_remote(run, data_bytes, limit):
    ratios = remote_ratios(run, data_bytes, limit)
    epochs = ", ".join(f"epoch {epoch}: local {local:.0f} img/s, remote {remote:.0f} ({ratio:.2f}x), downloaded "
                       f"{downloaded:.2f}x the data" for epoch, (local, remote, ratio, downloaded) in enumerate(zip(
                           run["local_images_per_s"], run["remote_images_per_s"], ratios["speed_ratio"],
                           ratios["downloaded_ratio"])))
    return f"{epochs}; peak cache {ratios['peak_cache_ratio']:.2f}x the limit"


def summarise_remote(rounds, data_bytes, limit):
    """Per epoch the medians over rounds of local and remote img/s, their ratio and the bytes downloaded over the
    data's; the peak cache over the limit, the most of any round."""
    ratios = [remote_ratios(run, data_bytes, limit) for run in rounds]

    def median(key, epoch, of=rounds):
        return statistics.median(run[key][epoch] for run in of)

    epochs = [{"local_images_per_s": median("local_images_per_s", epoch),
               "remote_images_per_s": median("remote_images_per_s", epoch),
               "speed_ratio": median("speed_ratio", epoch, ratios),
               "downloaded_ratio": median("downloaded_ratio", epoch, ratios)} for epoch in range(REMOTE_EPOCHS)]
    return {"window": rounds[0]["window"], "epochs": epochs,
            "peak_cache_ratio": max(ratio["peak_cache_ratio"] for ratio in ratios),
            "peak_reserved_ratio": max(run["peak_reserved_bytes"] for run in rounds) / limit,
            "rounds": rounds}


def print_remote_table(table, args, train, data_bytes, limit, where):
    window = next(iter(table.values()))["window"]
    print(f"\n{where} through the node-local cache vs local disk, the same shard-window order: "
          f"{train['samples']} train images in {len(train['shards'])} shards, {data_bytes / 1e6:.0f} MB; cache limit "
          f"{limit / 1e6:.0f} MB ({REMOTE_CACHE_SHARE:.0%}), windows of {window} shards; batch {args.batch_size}, "
          f"{args.workers} workers, {args.rounds} rounds (medians); img/s after each epoch's first window")
    print(f"{'loader':>10} {'epoch':>6} {'local img/s':>12} {'remote img/s':>13} {'remote/local':>13} "
          f"{'downloaded':>11} {'peak cache':>11}")
    for name, row in table.items():
        for epoch, figures in enumerate(row["epochs"]):
            peak = f"{row['peak_cache_ratio']:10.2f}x" if epoch == 0 else ""
            print(f"{name:>10} {epoch:>6} {figures['local_images_per_s']:12.0f} {figures['remote_images_per_s']:13.0f} "
                  f"{figures['speed_ratio']:12.2f}x {figures['downloaded_ratio']:10.2f}x {peak}")
    print("remote/local: remote / local img/s after the epoch's first window (target >= 0.9); downloaded: bytes "
          "downloaded in the epoch / the data's (target <= 1.1); peak cache: the most bytes its directory held / the "
          "limit (<= 1.0)")
    print("remote/local img/s after the first window: " + "; ".join(
        f"{name} " + ", ".join(f"{figures['speed_ratio']:.2f}x" for figures in row["epochs"]) for name, row in
        table.items()) + f" (epochs {', '.join(map(str, range(REMOTE_EPOCHS)))}; target >= 0.9)")
