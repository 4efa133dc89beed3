"""ILSVRC2012 (archives, an extracted tree, the Kaggle layout, or a Hugging Face Hub copy: parquet files or timm's
WebDataset shards, local or hf://) to shuffled WebDataset shards with DALI indexes; or WebDataset shards adopted in
place (--adopt: their indexes and manifest written, no byte of them rewritten).

    python -m prep.imagenet --src ILSVRC2012/ --out shards/
    python -m prep.imagenet --src ILSVRC2012/ --out s3://bucket/imagenet/ [--stage DIR]
    python -m prep.imagenet --src hf://datasets/ILSVRC/imagenet-1k --out shards/
    python -m prep.imagenet --src imagenet-1k-wds/ --adopt [--out DIR]

Killed at any moment, the same command continues where it stopped and ends with the same bytes. An --out URL
gets its shards written to a local stage first, then uploaded with the manifest last.
"""
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import outlock, store
from common.atomic import write_atomically
from common.cli import Parser, integer, output_problem
from common.errors import DataError
from common.layout import MANIFEST, SPLITS, read_manifest
from prep import adopt, folders, manifest, remote, report
from prep.devkit import LabelError
from prep.progress import progress
from prep.shards import SCRATCH, Options, finished, plan, write_shard
from prep.sources import SourceError, label_mismatch, open_source, stray_sample
from prep.sources.hub import is_url, url_problem
from prep.tario import ArchiveError
from prep.workers import Refused, fail, worker_pool

LAYOUTS = ("shards", "folders", "both")
INPUT_ERRORS = (SourceError, LabelError, ArchiveError)
RUN_FILE = "run.json"  # in <out>/.prep: what the unfinished run was asked, so a resume cannot mix options
RUN_RECORD = f"{SCRATCH}/{RUN_FILE}"
UNFINISHED = f"an unfinished run ({RUN_RECORD})"
# The options the output depends on, as the user types them -> their key in the manifest's "options" and in
# RUN_RECORD (argparse's name for the flag's value): a rerun into an output made with others is refused.
RECORDED = {flag: flag[2:].replace("-", "_") for flag in (
    "--shard-size", "--seed", "--splits", "--layout", "--max-side", "--quality", "--full-decode",
    "--max-member-bytes")}


def parse_args(argv):
    parser = Parser("prep", prog="python -m prep.imagenet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="directory with the ILSVRC2012 archives, an extracted "
                        "train/ val/ tree, the Kaggle layout, a Hugging Face snapshot (parquet files or timm's "
                        "WebDataset shards), or an hf:// URL of one")
    parser.add_argument("--out", help="output directory (created; reruns resume in it), or a URL: "
                        "s3://bucket/prefix/, gs://bucket/prefix/; with --adopt: where the indexes and manifest go "
                        "(default: beside the shards in --src)")
    parser.add_argument("--adopt", action="store_true", help="adopt the WebDataset shards in --src as they are "
                        "(a .jpg and a .cls per sample): write their DALI indexes and manifest, rewrite no byte")
    parser.add_argument("--stage", help="with an --out URL: where the output is written before it is uploaded, "
                        "removed once it is (default: a directory named after the URL in the system temp)")
    parser.add_argument("--shard-size", type=integer(1), default=1000, help="images per shard (default 1000)")
    parser.add_argument("--workers", type=integer(1), default=os.cpu_count(), help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train shuffle (default 0)")
    parser.add_argument("--splits", default="train,val", help="comma-separated, from train,val (default both)")
    parser.add_argument("--layout", choices=LAYOUTS, default="shards",
                        help="shards, the DeepLearningExamples folder layout, or both (default shards)")
    parser.add_argument("--max-side", type=integer(16), help="re-encode images whose longer side exceeds this "
                        "(at least 16; default: keep the original bytes)")
    parser.add_argument("--quality", type=integer(1, 100), default=95,
                        help="JPEG quality of re-encoded images (default 95)")
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every image to catch corrupt data (default: check headers and end marker)")
    parser.add_argument("--max-rejects", type=integer(0), default=100,
                        help="fail once more images than this are rejected (default 100)")
    parser.add_argument("--max-member-bytes", type=integer(1), default=64 << 20,
                        help="refuse archive members larger than this (default 64 MiB)")
    args = parser.parse_args(argv)
    args.splits = args.splits.split(",")
    unknown = [split or "(empty)" for split in args.splits if split not in SPLITS]
    if unknown:
        parser.error(f"--splits: unknown {','.join(unknown)}; choose from {','.join(SPLITS)}")
    if len(set(args.splits)) < len(args.splits):
        parser.error(f"--splits: {','.join(args.splits)} names a split twice")
    if is_url(args.src):
        parser.require(f"--src {args.src}", url_problem(args.src))
    if args.adopt:
        adopt.check_args(parser, args)
    elif args.out is None:
        parser.error("the following arguments are required: --out")
    if "://" in args.out:
        check_url_out(parser, args)
    elif args.stage is not None:
        parser.error(f"--stage: only for an --out URL; --out {args.out} is written in place")
    else:
        parser.require(f"--out {args.out}", output_problem(args.out))
    if args.layout != "folders" and importlib.util.find_spec("wds2idx") is None:
        parser.error("the .idx files are written by DALI's wds2idx module: "
                     "pip install 'imagenet-feed[dali]' (or use --layout folders)")
    return args


def check_url_out(parser, args):
    """An --out URL must be one prep can write to and reach; its stage, a directory prep can write in."""
    if not args.out.startswith(remote.WRITABLE):
        parser.error(f"--out {args.out}: prep writes to a directory or a {', '.join(remote.WRITABLE)} URL")
    parser.require(f"--out {args.out}", remote.client_problem(args.out))
    remote.quiet_clients()
    args.stage = args.stage or default_stage(args.out)
    parser.require(f"--stage {args.stage}", output_problem(args.stage))


def default_stage(url):
    """The same for the same URL, so that a rerun finds what the stopped run staged."""
    return str(Path(tempfile.gettempdir(), "prep-stage", re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/"))))


def run_options(args):
    """What the output depends on; stored in the manifest and compared on resume."""
    return {key: getattr(args, key) for key in RECORDED.values()}


def main(argv=None):
    """Runs the command; a refused run or bad input prints one line, after every progress bar has closed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: what is done is kept, and what was in flight is a temp file
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        message, code = "interrupted; rerun the same command to resume", 130
    except Refused as refused:
        message, code = refused, refused.code
    except INPUT_ERRORS as error:
        message, code = error, 2
    except DataError as error:  # an --out URL: no such bucket (2), or a store that kept failing (1)
        message, code = error, error.exit_status
    except OSError as error:  # an --out that cannot be written, an input that cannot be read, a full disk
        message, code = f"{error.filename or args.out}: {error.strerror or error}", 1
    print(f"prep: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(args):
    started = time.perf_counter()
    if args.adopt:
        return adopt.run(args, started)
    asked = {"src": str(args.src), "options": run_options(args)}
    if store.is_url(args.out):  # one run at a time in the stage, which holds what goes up
        with outlock.held(args.stage, f"--stage {args.stage} (of --out {args.out})", lock_file=None, refuse_as="prep"):
            return run_to_url(args, asked, started)
    out = Path(args.out)
    with outlock.held(out, f"--out {out}", lock_file=None, refuse_as="prep"):  # one run at a time in --out
        if is_complete(out, asked, "--out"):
            print(f"prep: {out} is already complete; `python -m prep.verify {out}` re-checks it")
            return 0
        return prep_into(out, args, asked, started)


def run_to_url(args, asked, started):
    """Prep into the stage (resuming there as in any --out), then upload what the URL lacks, manifest last."""
    url, stage = args.out, Path(args.stage)
    if url_is_complete(url, asked):
        if holds_result_of(stage, asked):  # stopped after the manifest went up, before the stage was removed
            shutil.rmtree(stage)
        print(f"prep: {url} is already complete; `python -m prep.verify {url}` re-checks it")
        return 0
    if is_complete(stage, asked, "--stage"):
        print(f"prep: uploading the output staged in {stage}", file=sys.stderr)
    else:
        status = prep_into(stage, args, asked, started)
        if status:
            return status
    sent, kept = remote.upload(stage, url, (RUN_RECORD, json.dumps(asked)))
    shutil.rmtree(stage)
    print(f"prep: {url} is complete: {sent} files uploaded, manifest last ({kept} were there already); "
          f"removed the staged copy {stage}")
    return 0


def prep_into(out, args, asked, started):
    """Write the output into the directory `out`; returns the exit status."""
    source = open_source(args.src, args.splits, out / SCRATCH, args.max_member_bytes)
    record_run(out, asked)  # before anything lands in scratch, so what is there always belongs to `asked`
    classes = source.classes()
    mismatch = label_mismatch(classes, source)
    if mismatch:
        fail(mismatch, code=1)
    if args.layout != "shards":
        folders.make_dirs(out, args.splits, classes)
    writer = Options(str(out), args.layout, args.max_side, args.quality, args.full_decode)
    listings, jobs, records = write_splits(source, classes, args, writer)
    expected = {split: source.expected(split) for split in args.splits}
    by_split = {split: [records[job.name] for job in jobs if job.split == split] for split in args.splits}
    return finish(args, out, source, classes, listings, by_split, expected, started)


def finish(args, out, source, classes, listings, by_split, expected, started):
    """Counts checked and the summary printed (with what the source notes about itself); if they match, lists and
    manifest written into `out` and scratch removed. Returns the exit status."""
    scan_rejects = [r for listing in listings.values() for r in listing.rejected]
    unsafe = [u for listing in listings.values() for u in listing.unsafe]
    result = manifest.build(source.kind, args.src, run_options(args), classes, by_split, scan_rejects, unsafe)
    rejects = scan_rejects + [r for records in by_split.values() for record in records for r in record.rejected]
    problems = report.count_problems(expected, result, rejects)
    folder_bytes = {split: sum(record.folder_bytes for record in records) for split, records in by_split.items()}
    print(report.summary(expected, result, time.perf_counter() - started, problems, folder_bytes))
    for note in source.notes():
        print(f"  {note}")
    if problems:  # no manifest: the output stays unfinished, so a rerun checks and fails again
        print(f"prep: the counts do not match the labels, so {args.out} gets no {MANIFEST}; "
              "fix the source and prep it into a new --out", file=sys.stderr)
        return 1
    if args.layout != "shards":
        folders.write_lists(out, classes, by_split)
    manifest.write(out, result)
    shutil.rmtree(out / SCRATCH)
    return 0


def write_splits(source, classes, args, options):
    """List, plan and write each split in turn: train shards are being written while val is still listed.

    Returns ({split: Listing}, jobs in shard order, {shard name: ShardRecord})."""
    label_of = {wnid: label for label, wnid in enumerate(classes)}
    listings, jobs, records, waiting, rejects = {}, [], {}, [], Rejects(args.max_rejects)
    with worker_pool(args.workers) as pool, progress(total=0, unit="img", desc="prep", smoothing=0.05) as bar:
        for split in args.splits:
            listings[split] = source.listing(split, pool.map)
            stray = stray_sample(listings[split], classes)
            if stray:
                fail(stray, code=1)
            rejects.add(listings[split].rejected)
            for job in plan(split, listings[split].samples, label_of, args.shard_size, args.seed):
                jobs.append(job)
                bar.total += len(job.samples)
                record = finished(options.out, job.name)
                if record is None:
                    waiting.append(pool.submit(write_shard, job, options))
                else:
                    records[job.name] = record
                    rejects.add(record.rejected)
                    bar.update(len(job.samples))
            bar.refresh()
        for future in waiting:
            record = future.result()
            records[record.name] = record
            rejects.add(record.rejected)
            bar.update(len(record.kept) + len(record.rejected))
    return listings, jobs, records


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


def is_complete(out, asked, flag):
    """Refuse an output directory (given as `flag`) that holds something else; True when it holds the finished
    result of this command. (parse_args has made sure it is a directory or can be made one.)"""
    scratch = out / SCRATCH
    if (out / MANIFEST).exists():
        require_same(flag, out, lambda: made_from(read_manifest(out)), asked, f"a {MANIFEST}")
        shutil.rmtree(scratch, ignore_errors=True)  # killed after the manifest was written
        return True
    if (scratch / RUN_FILE).exists():
        require_same(flag, out, lambda: run_record((scratch / RUN_FILE).read_text()), asked, UNFINISHED)
        print(f"prep: resuming the unfinished run in {out}", file=sys.stderr)
    elif out.exists() and any(p.name != SCRATCH for p in out.iterdir()):
        fail(f"{flag} {out} is not empty and holds no prep run; choose a new or empty directory")
    return False


def url_is_complete(url, asked):
    """is_complete for an --out URL, whose unfinished run is an upload that stopped: its objects and, in
    RUN_RECORD, what that run was asked."""
    there = remote.objects(url)
    if MANIFEST in there:
        require_same("--out", url, lambda: made_from(json.loads(store.read_text(store.join(url, MANIFEST)))), asked,
                     f"a {MANIFEST}")
        if RUN_RECORD in there:  # stopped after the manifest went up
            store.remove(store.join(url, RUN_RECORD))
        return True
    if RUN_RECORD in there:
        require_same("--out", url, lambda: run_record(store.read_text(store.join(url, RUN_RECORD))), asked,
                     UNFINISHED)
        print(f"prep: resuming the unfinished upload to {url}", file=sys.stderr)
    elif there:
        fail(f"--out {url} is not empty and holds no prep run; choose a new or empty prefix")
    return False


def require_same(flag, out, read, asked, record):
    """Refuse unless `read()` gives what this command asks, in the form of `asked`; `record` names what it read
    (the manifest or the unfinished run's record) should it be unreadable."""
    try:
        changed = differences(read(), asked)
    except (OSError, ValueError, KeyError, TypeError):
        fail(f"{flag} {out} holds {record} prep cannot read; choose another {flag}")
    if changed:
        was, now = (", ".join(spelled) for spelled in zip(*changed))
        fail(f"{flag} {out} was written with {was}; this run asks {now} (use the same options to resume or complete "
             f"it, or another {flag})")


def differences(previous, asked):
    """(as recorded, as asked) of each input and option where `previous` and `asked` differ, as typed."""
    values = [("--src", previous["src"], asked["src"])]
    values += [(flag, previous["options"][key], asked["options"][key]) for flag, key in RECORDED.items()]
    return [(typed(flag, was), typed(flag, now)) for flag, was, now in values if was != now]


def typed(flag, value):
    """The option as the user types it; an option not given (None, False) as "no <flag>"."""
    if value is None or value is False:
        return f"no {flag}"
    if value is True:
        return flag
    return f"{flag} {shlex.quote(','.join(value) if isinstance(value, list) else str(value))}"


def made_from(found):
    """What a manifest was made from, in the form of `asked`."""
    return as_asked(found["source"]["path"], found["options"])


def run_record(text):
    """What the unfinished run whose RUN_RECORD is `text` was asked, in the form of `asked`."""
    return as_asked(**json.loads(text))


def as_asked(src, options):
    """TypeError for a record of another shape, such as one written by a prep that recorded other options."""
    if not isinstance(src, str) or not isinstance(options, dict) or set(options) != set(RECORDED.values()):
        raise TypeError("not what this prep records")
    return {"src": src, "options": options}


def holds_result_of(out, asked):
    """Whether the directory `out` holds the finished result of what this command asks."""
    try:
        return not differences(made_from(read_manifest(out)), asked)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def record_run(out, asked):
    """Written once the inputs were found: from here on, --out belongs to this command."""
    scratch = out / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    write_atomically(scratch / RUN_FILE, json.dumps(asked))


if __name__ == "__main__":
    sys.exit(main())
