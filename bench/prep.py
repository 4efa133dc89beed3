"""`python -m bench prep`: time prep.imagenet against the DeepLearningExamples extraction, on one source; with
`--layout parquet`, prep of a Hugging Face parquet copy against prep of the same images as ILSVRC archives.

Both read the same synthetic ILSVRC2012 download (ImageNet-sized JPEGs from prep.sample):
  prep  `python -m prep.imagenet --src SRC --out OUT --workers N --shard-size S` (shards, index, manifest; no
        re-encode). S defaults to 100: at prep's default of 1,000 a 100 MB source is one train shard, which one
        worker writes while the other idles, where real ImageNet's 1,282 train shards keep every worker busy.
  DLE   the DeepLearningExamples README: `tar -x` the train tar into train/, each class tar into
        train/<wnid>/ (removing the class tar), then the val tar into val/ (no valprep.sh: the baseline does less).
The source has few classes because real ImageNet has about one class tar per 140 MB; ten in 100 MB would
charge DLE ten times its real per-class tar start-up cost.
--layout parquet: prep.sample writes --images images (default 20,000, small: 64-160 px sides, so the per-image work
of each source is what is timed rather than the bytes) as the archives, prep.hub_sample writes the same images as
parquet files of 1,000 rows in row groups of 100 (the Hub's files hold about 4,400 rows), and prep.imagenet runs on
each; the parquet run also streams its files into the spool it reads by offset.
The sources are read once before timing so both start from a warm page cache; the methods then run in
alternating rounds and the median of each is compared. Dirty pages are flushed (sync) before each run,
untimed, so no run pays for the previous one's write-back; neither syncs its own output.
"""
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench import results
from common.cli import Parser, integer, output_problem, positive_number
from common.layout import read_manifest
from prep import hub_sample, sample

DEFAULT_OUT = Path("build/bench/prep")
IMAGE_BYTES_GUESS = 105e3  # a little under prep.sample's mean, so one pass usually reaches the size
VAL_FRACTION = 0.1

DLE_SCRIPT = r"""
set -euo pipefail
mkdir train val
tar -xf "$1/ILSVRC2012_img_train.tar" -C train
cd train
find . -name "*.tar" | while read NAME ; do
    mkdir -p "${NAME%.tar}"; tar -xf "${NAME}" -C "${NAME%.tar}"; rm -f "${NAME}"
done
cd ..
tar -xf "$1/ILSVRC2012_img_val.tar" -C val
"""


def make_source(src, size_mb, classes=2, seed=0):
    """Write an ILSVRC2012 source of at least size_mb MB of ImageNet-sized JPEGs; return prep.sample's record."""
    target = size_mb * 1e6
    per_class = target / IMAGE_BYTES_GUESS / classes
    least = max(2, math.ceil(len(sample.QUIRKS) / classes))  # room for the quirks prep.sample plants
    while True:
        train = max(least, math.ceil(per_class * (1 - VAL_FRACTION)))
        val = max(1, math.ceil(per_class * VAL_FRACTION))
        written = sample.write_sample(src, classes=classes, train_per_class=train, val_per_class=val,
                                      size="imagenet", seed=seed, progress=True)
        if written["bytes"] >= target:
            return written
        per_class *= 1.03 * target / written["bytes"]


def warm_page_cache(src):
    for path in sorted(Path(src).iterdir()):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def run_timed(method, command, cwd=None):
    os.sync()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        last = ((result.stderr or result.stdout).strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"bench prep: the {method} run failed (exit {result.returncode}): {last}")
    return seconds


def prep_command(src, out, workers, shard_size):
    return [sys.executable, "-m", "prep.imagenet", "--src", str(src), "--out", str(out), "--workers", str(workers),
            "--shard-size", str(shard_size)]


def check_prep_output(out, images):
    """A timing only counts if prep wrote every image (the sample has no corrupt files to reject)."""
    manifest = read_manifest(out)
    written = sum(split["samples"] for split in manifest["splits"].values())
    if written != images:
        raise SystemExit(f"bench prep: prep.imagenet wrote {written} of {images} images to {out}")


def dle_command(src):
    return ["bash", "-c", DLE_SCRIPT, "dle-extract", str(Path(src).resolve())]


def measure(src, images, work, workers=2, rounds=5, shard_size=100):
    """Time both methods on `src` in alternating rounds (fresh output dir each run); return the summary."""
    warm_page_cache(src)
    runs = {"prep": [], "dle": []}
    for round_ in range(rounds):
        for method in runs:
            out = Path(work) / f"{method}-{round_}"
            if method == "prep":
                runs[method].append(run_timed(method, prep_command(src, out, workers, shard_size)))
                check_prep_output(out, images)
            else:
                out.mkdir(parents=True)
                runs[method].append(run_timed(method, dle_command(src), cwd=out))
            shutil.rmtree(out)
    median = {method: statistics.median(seconds) for method, seconds in runs.items()}
    return {
        "images": images,
        "workers": workers,
        "shard_size": shard_size,
        "rounds": rounds,
        "statistic": "median of alternating rounds after one warm-up read of the archives",
        "prep_s": median["prep"], "dle_s": median["dle"],
        "prep_runs_s": runs["prep"], "dle_runs_s": runs["dle"],
        "prep_images_per_s": images / median["prep"], "dle_images_per_s": images / median["dle"],
        "ratio_prep_over_dle": median["prep"] / median["dle"],
    }


def measure_parquet(archives_dir, parquet_dir, images, work, workers=2, rounds=5, shard_size=100):
    """Time prep of the archives and of their parquet copy in alternating rounds; return the summary."""
    for folder in (archives_dir, Path(parquet_dir, "data")):
        warm_page_cache(folder)
    sources = {"archives": archives_dir, "parquet": parquet_dir}
    runs = {method: [] for method in sources}
    for round_ in range(rounds):
        for method, src in sources.items():
            out = Path(work) / f"{method}-{round_}"
            runs[method].append(run_timed(f"prep of the {method}", prep_command(src, out, workers, shard_size)))
            check_prep_output(out, images)
            shutil.rmtree(out)
    median = {method: statistics.median(seconds) for method, seconds in runs.items()}
    return {
        "images": images, "workers": workers, "shard_size": shard_size, "rounds": rounds,
        "statistic": "median of alternating rounds after one warm-up read of both sources",
        **{f"{method}_s": median[method] for method in runs}, **{f"{method}_runs_s": runs[method] for method in runs},
        **{f"{method}_images_per_s": images / median[method] for method in runs},
        "ratio_parquet_over_archives": median["parquet"] / median["archives"],
    }


def report_parquet(summary):
    for method in ("archives", "parquet"):
        runs = " ".join(f"{s:.2f}" for s in summary[f"{method}_runs_s"])
        print(f"  prep.imagenet from the {method:<9} median {summary[f'{method}_s']:6.2f} s  "
              f"{summary[f'{method}_images_per_s']:7.0f} img/s  (runs {runs})")
    print(f"  ratio parquet/archives = {summary['ratio_parquet_over_archives']:.2f}", flush=True)


def report(summary):
    prep = f"prep.imagenet --workers {summary['workers']} --shard-size {summary['shard_size']}"
    for method, label in (("prep", prep), ("dle", "DLE tar -x")):
        runs = " ".join(f"{s:.2f}" for s in summary[f"{method}_runs_s"])
        print(f"  {label:<44} median {summary[f'{method}_s']:6.2f} s  "
              f"{summary[f'{method}_images_per_s']:7.0f} img/s  (runs {runs})")
    print(f"  ratio prep/DLE = {summary['ratio_prep_over_dle']:.2f} (target <= 1.0)", flush=True)


def parse_args(argv):
    parser = Parser("bench prep", prog="python -m bench prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("dle", "parquet"), default="dle",
                        help="dle: prep against the DeepLearningExamples tar -x recipe; parquet: prep of a Hugging "
                        "Face parquet copy against prep of the same images as archives")
    parser.add_argument("--size-mb", type=positive_number, default=100,
                        help="source size to generate (default 100 MB; --layout dle)")
    parser.add_argument("--images", type=integer(10), default=20_000,
                        help="images to generate (--layout parquet; default 20,000)")
    parser.add_argument("--image-size", choices=sample.SIZES, default="small",
                        help="prep.sample's image size (--layout parquet; default small)")
    parser.add_argument("--classes", type=integer(1, sample.MAX_CLASSES), default=2,
                        help="classes in the source (default 2; see above)")
    parser.add_argument("--workers", type=integer(1), default=2, help="prep.imagenet --workers")
    parser.add_argument("--shard-size", type=integer(1), default=100, help="prep.imagenet --shard-size (default 100)")
    parser.add_argument("--rounds", type=integer(1), default=9,
                        help="alternating timed runs of each method (default 9)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="scratch space (default build/bench/prep)")
    parser.add_argument("--keep", type=Path, help="write the source here and keep it; reused if already there")
    results.add_option(parser)
    args = parser.parse_args(argv)
    results.check_option(parser, args)
    parser.require(f"--out {args.out}", output_problem(args.out))
    if args.keep:
        parser.require(f"--keep {args.keep}", output_problem(args.keep))
    return args


def archives(src):
    return [Path(src) / name for name in (sample.TRAIN_TAR, sample.VAL_TAR, sample.DEVKIT_TAR)]


def source(args, scratch):
    """The source to time, as {path, bytes, classes, images, generate_s}: --keep's if big enough, else new."""
    src = args.keep or Path(scratch) / "ILSVRC2012"
    kept = args.keep is not None and all(path.is_file() for path in archives(src)) and \
        sum(path.stat().st_size for path in archives(src)) >= args.size_mb * 1e6
    start = time.perf_counter()
    if not kept:
        make_source(src, args.size_mb, args.classes)
    generate_s = None if kept else time.perf_counter() - start
    classes, images = count_images(src)
    return {"path": str(src), "bytes": sum(path.stat().st_size for path in archives(src)), "classes": classes,
            "images": images, "generate_s": generate_s}


def count_images(src):
    """(classes, train + val images) in the archives."""
    classes = train = 0
    with tarfile.open(Path(src) / sample.TRAIN_TAR) as outer:
        for member in outer:
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                classes, train = classes + 1, train + len(inner.getnames())
    with tarfile.open(Path(src) / sample.VAL_TAR) as val:
        return classes, train + len(val.getnames())


def main_parquet(args, scratch):
    """--layout parquet: the archives of --images images and their parquet copy, timed; the summary saved."""
    start = time.perf_counter()
    per_class = args.images / args.classes
    train, val = math.ceil(per_class * (1 - VAL_FRACTION)), math.ceil(per_class * VAL_FRACTION)
    archives_dir = Path(scratch, "ILSVRC2012")
    written = sample.write_sample(archives_dir, classes=args.classes, train_per_class=train, val_per_class=val,
                                  size=args.image_size, progress=True)
    parquet_dir = hub_sample.write_parquet(archives_dir, Path(scratch, "parquet"), rows_per_file=1000, row_group=100)
    parquet_bytes = sum(path.stat().st_size for path in Path(parquet_dir, "data").iterdir())
    print(f"bench prep: {written['images']} {args.image_size} images as archives ({written['bytes'] / 1e6:.1f} MB) "
          f"and as parquet ({parquet_bytes / 1e6:.1f} MB), generated in {time.perf_counter() - start:.1f} s")
    summary = measure_parquet(archives_dir, parquet_dir, written["images"], Path(scratch, "work"), args.workers,
                              args.rounds, args.shard_size)
    report_parquet(summary)
    source_record = {"archives_bytes": written["bytes"], "parquet_bytes": parquet_bytes, "classes": args.classes,
                     "image_size": args.image_size}
    print(f"  saved {results.save('prep-parquet', {'source': source_record, **summary}, out_dir=args.results)}")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=args.out, prefix="run-")
    if args.layout == "parquet":
        try:
            return main_parquet(args, scratch)
        finally:
            shutil.rmtree(scratch)
    try:
        src = source(args, scratch)
        made = f"generated in {src['generate_s']:.1f} s" if src["generate_s"] else "reused"
        print(f"bench prep: source {src['bytes'] / 1e6:.1f} MB, {src['images']} images in {src['classes']} classes, "
              f"{made} ({src['path']})")
        summary = measure(src["path"], src["images"], Path(scratch) / "work", args.workers, args.rounds,
                          args.shard_size)
    finally:
        shutil.rmtree(scratch)
    report(summary)
    source_record = {key: src[key] for key in ("bytes", "classes", "generate_s")}
    saved = results.save("prep", {"source": source_record, **summary}, out_dir=args.results)
    print(f"  saved {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
