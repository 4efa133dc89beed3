"""ILSVRC2012 (archives, an extracted tree or the Kaggle layout) to shuffled WebDataset shards with DALI indexes.

    python -m prep.imagenet --src ILSVRC2012/ --out shards/

Killed at any moment, the same command continues where it stopped and ends with the same bytes.
"""
import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from prep import folders, manifest, report
from prep.devkit import LabelError
from prep.shards import SCRATCH, Options, finished, plan, write_shard
from prep.sources import SourceError, check_classes, open_source
from prep.tario import ArchiveError

SPLITS = ("train", "val")
LAYOUTS = ("shards", "folders", "both")
INPUT_ERRORS = (SourceError, LabelError, ArchiveError)
RUN_FILE = "run.json"  # in <out>/.prep: what the unfinished run was asked, so a resume cannot mix options


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m prep.imagenet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="directory with the ILSVRC2012 archives, an extracted "
                        "train/ val/ tree, or the Kaggle layout")
    parser.add_argument("--out", required=True, help="output directory (created; reruns resume in it)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train shuffle (default 0)")
    parser.add_argument("--splits", default="train,val", help="comma-separated, from train,val (default both)")
    parser.add_argument("--layout", choices=LAYOUTS, default="shards",
                        help="shards, the DeepLearningExamples folder layout, or both (default shards)")
    parser.add_argument("--max-side", type=int, help="re-encode images whose longer side exceeds this "
                        "(default: keep the original bytes)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (default 95)")
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every image to catch corrupt data (default: check headers and end marker)")
    parser.add_argument("--max-rejects", type=int, default=100,
                        help="fail once more images than this are rejected (default 100)")
    parser.add_argument("--max-member-bytes", type=int, default=64 << 20,
                        help="refuse archive members larger than this (default 64 MiB)")
    args = parser.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    bad = [s for s in args.splits if s not in SPLITS] or ([] if args.splits else ["(none)"])
    checks = ((bad, f"--splits: unknown {','.join(bad)}; choose from {','.join(SPLITS)}"),
              (args.shard_size < 1, "--shard-size must be at least 1"),
              (args.workers < 1, "--workers must be at least 1"),
              (args.max_side is not None and args.max_side < 16, "--max-side must be at least 16"),
              (not 1 <= args.quality <= 100, "--quality must be in 1..100"),
              (args.max_rejects < 0, "--max-rejects must be at least 0"),
              (args.max_member_bytes < 1, "--max-member-bytes must be at least 1"))
    checks += ((args.layout != "folders" and importlib.util.find_spec("wds2idx") is None,
                "the .idx files are written by DALI's wds2idx module: pip install nvidia-dali-cuda130 "
                "(or use --layout folders)"),)
    for failed, message in checks:
        if failed:
            parser.exit(2, f"prep: {message}\n")
    return args


def run_options(args):
    """What the output depends on; stored in the manifest and compared on resume."""
    return {"shard_size": args.shard_size, "seed": args.seed, "splits": args.splits, "layout": args.layout,
            "max_side": args.max_side, "quality": args.quality, "full_decode": args.full_decode}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    out, options = Path(args.out), run_options(args)
    asked = {"src": str(args.src), "options": options, "max_member_bytes": args.max_member_bytes}
    if not check_out(out, asked):
        return 0
    try:
        source = open_source(args.src, args.splits, out / SCRATCH, args.max_member_bytes)
        classes = source.classes()
        record_run(out, asked)
        if args.layout != "shards":
            folders.make_dirs(out, args.splits, classes)
        writer = Options(str(out), args.layout, args.max_side, args.quality, args.full_decode)
        found, jobs, records = write_splits(source, classes, args, writer)
        problems = check_classes(classes, source, found)
        expected = {split: source.expected(split) for split in args.splits}
    except INPUT_ERRORS as error:
        fail(error)
    if problems:
        fail("; ".join(problems), code=1)
    by_split = {split: [records[job.name] for job in jobs if job.split == split] for split in args.splits}
    return finish(args, source.kind, classes, found, by_split, expected, started)


def finish(args, kind, classes, found, by_split, expected, started):
    """Counts checked, lists and manifest written, scratch removed, summary printed; the exit status."""
    out = Path(args.out)
    scan_rejects = [r for split in found.values() for r in split.rejected]
    unsafe = [u for split in found.values() for u in split.unsafe]
    result = manifest.build(kind, args.src, run_options(args), classes, by_split, scan_rejects, unsafe)
    rejects = scan_rejects + [r for records in by_split.values() for record in records for r in record["rejected"]]
    problems = report.count_problems(expected, result, rejects)
    if args.layout != "shards":
        folders.write_lists(out, classes, by_split)
    manifest.write(out, result)
    shutil.rmtree(out / SCRATCH)
    print(report.summary(expected, result, time.perf_counter() - started, problems))
    return 1 if problems else 0


def write_splits(source, classes, args, options):
    """List, plan and write each split in turn: train shards are being written while val is still listed.

    Returns ({split: Split}, jobs in shard order, {shard name: record})."""
    labels = {wnid: index for index, wnid in enumerate(classes)}
    found, jobs, records, waiting, rejects = {}, [], {}, [], Rejects(args.max_rejects)
    with worker_pool(args.workers) as pool, tqdm(total=0, unit="img", desc="prep", smoothing=0.05) as bar:
        for split in args.splits:
            found[split] = source.split(split)
            rejects.add(found[split].rejected)
            for job in plan(split, found[split].samples, labels, args.shard_size, args.seed):
                jobs.append(job)
                bar.total += len(job.samples)
                record = finished(options.out, job.name)
                if record is None:
                    waiting.append(pool.submit(write_shard, job, options))
                else:
                    records[job.name] = record
                    rejects.add(record["rejected"])
                    bar.update(len(job.samples))
            bar.refresh()
        for future in waiting:
            try:
                record = future.result()
            except OSError as error:
                fail(error, code=1)
            records[record["name"]] = record
            rejects.add(record["rejected"])
            bar.update(record["samples"] + len(record["rejected"]))
    return found, jobs, records


@contextmanager
def worker_pool(workers):
    """Processes for the shard tasks. Forking is cheapest but safe only while this process runs no other
    thread (a test process that loaded torch does), so then a fork server starts them instead."""
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() \
        else "forkserver"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        yield pool
    except BrokenProcessPool:
        fail("a worker process died (killed, or out of memory?); rerun the same command to resume", code=1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Rejects:
    """Counts rejected images and stops the run once there are more than --max-rejects."""

    def __init__(self, limit):
        self.limit, self.count = limit, 0

    def add(self, rejected):
        self.count += len(rejected)
        if self.count > self.limit:
            first = rejected[0]
            fail(f"{self.count} images rejected, more than --max-rejects {self.limit} (latest: {first['source']}: "
                 f"{first['reason']}); the shards written so far are kept: rerun with a higher --max-rejects "
                 "to finish", code=1)


def check_out(out, asked):
    """Refuse an --out that holds something else; False when it holds the finished result of this command."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")
    scratch, done = out / SCRATCH, out / manifest.NAME
    if done.exists():
        previous = manifest.load(out)
        if previous["options"] != asked["options"] or previous["source"]["path"] != asked["src"]:
            fail(f"--out {out} holds shards made from other inputs or options; choose another --out")
        shutil.rmtree(scratch, ignore_errors=True)  # killed after the manifest was written
        print(f"prep: {out} is already complete; `python -m prep.verify {out}` re-checks it")
        return False
    if (scratch / RUN_FILE).exists():
        previous = json.loads((scratch / RUN_FILE).read_text())
        if previous != asked:
            fail(f"--out {out} holds an unfinished run of other inputs or options "
                 f"({json.dumps(previous, sort_keys=True)}); rerun that, or choose another --out")
        print(f"prep: resuming the unfinished run in {out}", file=sys.stderr)
    elif out.exists() and any(p.name != SCRATCH for p in out.iterdir()):
        fail(f"--out {out} is not empty and holds no prep run; choose a new or empty directory")
    return True


def record_run(out, asked):
    """Written once the inputs were found usable: from here on, --out belongs to this command."""
    scratch = out / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    part = scratch / f"{RUN_FILE}.part"
    part.write_text(json.dumps(asked))
    os.replace(part, scratch / RUN_FILE)


def fail(message, code=2):
    """Bad input or a refused run: one line naming what is wrong, no traceback."""
    print(f"prep: {message}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())
