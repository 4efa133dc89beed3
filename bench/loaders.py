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
loopback S3-compatible server (moto), uploads the prep output (by default an ImageNet-sized sample in shards of
bench.data.REMOTE_SHARD images, made once under build/bench/remote), and reads it through the node-local cache limited
to REMOTE_CACHE_SHARE of the data, beside the local shards read in the same shard-window order, for REMOTE_EPOCHS epochs
a round (both bench.remote_loaders), alternating. It gives the remote img/s over local img/s after each epoch's first
window (the cache's cold start), the bytes downloaded per epoch over the dataset's bytes, and the peak bytes of the
cache directory (sampled every millisecond) over its limit. It also gives the node's download rate (bench.downloads):
the train shards fetched into an empty cache by one node of 1 local rank and of 4 (spawned processes, one gloo group),
MB/s, downloads per rank (each shard once per node, checked) and the 4-rank/1-rank ratio. `--remote --data-path
s3://bucket/prefix` (or gs://, https://) reads your store instead of the loopback server, beside a local copy of its
data fetched first.

The modules: this one parses the command line; bench.local_loaders and bench.remote_loaders run the rounds, timed by
bench.loader_timing against bench.torchvision_baseline, and bench.loader_table and bench.remote_table report them.
"""
import importlib.util
from pathlib import Path

import pipeline
from bench import local_loaders, remote_loaders, results
from common import store
from common.cli import Parser, integer, prepped_images
from pipeline.options import default_workers

LOADERS = pipeline.DATA_BACKENDS
DALI_NEEDS = "the dali backends need NVIDIA DALI (pip install 'imagenet-feed[dali]'), dali a GPU as well"


def parse_args(argv):
    usable = [backend for backend in pipeline.available_backends() if backend in LOADERS]
    parser = _parser(usable)
    args = parser.parse_args(argv)
    results.check_option(parser, args)
    args.backends = _backends(parser, args.backends, usable)
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


def _parser(usable):
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
    parser.add_argument("--backends", default=",".join(usable),
                        help="comma-separated, from " + ", ".join(LOADERS) + " (default: those usable here)")
    parser.add_argument("--remote", action="store_true",
                        help="read the data from a loopback S3 server through the node-local cache, beside local disk")
    results.add_option(parser)
    return parser


def _backends(parser, named, usable):
    """The backends of the comma-separated `named`; stop in one line unless each is a loader that can run here."""
    backends = [b for b in named.split(",") if b]
    if not backends:
        parser.error(f"--backends: none named; choose from {', '.join(LOADERS)}")
    if pipeline.CEILING in backends:
        parser.error(f"--backends: {pipeline.CEILING} decodes nothing (it hands out one resident batch), so it is no "
                     "loader to time against torchvision; `python -m bench train` uses it as the compute ceiling")
    unknown = [b for b in backends if b not in LOADERS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(LOADERS)}")
    unusable = [b for b in backends if b not in usable]
    if unusable:  # an optional part missing: one line saying what to install
        parser.error(f"--backends {','.join(unusable)} cannot run here: {DALI_NEEDS}")
    return backends


def check_data(parser, args):
    """--data-path is a prep output with enough train images for one timed pass."""
    found = parser.prep_output("--data-path", args.data_path)
    images, batches = prepped_images(found, "train"), local_loaders.pass_batches(args)
    if images // args.batch_size < batches:
        parser.error(f"--data-path {args.data_path} has {images} train images, {images // args.batch_size} "
                     f"batches of {args.batch_size}; a timed pass reads {batches} ({batches - args.steps} to fill "
                     "the queues, then --steps): give more data or fewer --steps")


def main(argv=None):
    args = parse_args(argv or [])
    return remote_loaders.run(args) if args.remote else local_loaders.run(args)
