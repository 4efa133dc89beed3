"""--adopt: WebDataset shards that already hold one image and one class label per sample, made a prep output as they
are. No byte of them is rewritten: prep writes each shard's DALI index (DALI's own wds2idx) and the manifest (the
classes, counts, per shard its samples, bytes and sha256) beside them, or into --out, where each shard is a symbolic
link to its original. The loaders, the cache and the resume contract then read them as any prep output.

Adopted shards are ImageNet-1k's: their .cls labels are read as the sorted-WNID ranks of its 1000 classes (the
convention of timm's copy and of prep), and a key that names its WNID is checked against its label. What the
loaders could not read by offset, or would read wrong, is refused in one line naming the shard, and nothing is
written for it: a compressed tar, a sample without its .jpg or its .cls, a label that is no class, a sample's
members apart, samples of one shard with different members. Images the loaders decode although prep would have
re-encoded them (greyscale, CMYK, a PNG named .jpg) are kept as they are and listed in the manifest (`as_is`); an
image no loader can decode is refused, since a DALI loader cannot skip it.

Each shard is one worker task whose record (.prep/<shard>.json) is written last, so a stopped run resumes where it
was; the manifest comes after every shard, and makes the run complete.
"""
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import outlock
from common.atomic import write_atomically
from common.digest import file_digest
from common.layout import MANIFEST, read_manifest
from prep import manifest, report
from prep.images import Rejected, quirk
from prep.progress import progress
from prep.shards import SCRATCH, Kept, ShardRecord, finished, record_path
from prep.sources.hub import LocalFiles, imagenet1k_wnids, is_url
from prep.sources.wds import group, label_problem, read_label, shards_by_split, timm_counts
from prep.tario import scan
from prep.workers import fail, worker_pool

KIND = "adopted"
RUN_FILE = "adopt.json"  # in <out>/.prep: what the unfinished adoption was asked
COMPRESSED = (".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tar.lz4")
GZIP_MAGIC = b"\x1f\x8b"


class Refusal(Exception):
    """A shard that cannot be adopted as it is: args[0] names it and says why, in one line."""


def check_args(parser, args):
    """The options --adopt takes: a local --src, and no option that asks for bytes to be rewritten."""
    if is_url(args.src):
        parser.error(f"--adopt reads shards in place: --src {args.src} is a URL; prep a copy of it instead")
    for flag, given in (("--max-side", args.max_side is not None), ("--layout", args.layout != "shards")):
        if given:
            parser.error(f"--adopt rewrites no byte of the shards, so {flag} cannot apply; prep a copy instead")
    args.out = args.out or args.src
    if "://" in args.out:
        parser.error(f"--adopt writes indexes and a manifest on this machine: --out {args.out} is a URL")


def run(args, started):
    """Adopt the shards of --src into --out (the default: --src itself); returns the exit status."""
    src, out = Path(args.src), Path(args.out)
    asked = {"src": str(src), "splits": args.splits, "full_decode": args.full_decode}
    with outlock.held(out, f"--out {out}", lock_file=None, refuse_as="prep"):
        if _complete(out, asked):
            print(f"prep: {out} already holds the adopted shards of {src}; `python -m prep.verify {out}` re-checks "
                  "them")
            return 0
        shards = _shards(src, out, args.splits)
        _require_empty(src, out)
        (out / SCRATCH).mkdir(parents=True, exist_ok=True)
        write_atomically(out / SCRATCH / RUN_FILE, json.dumps(asked))
        records = _adopt_all(src, out, shards, args)
        return _finish(args, out, shards, records, started)


def _complete(out, asked):
    """True when `out` holds this adoption's manifest; refused when it holds another run."""
    if (out / MANIFEST).exists():
        try:
            found = read_manifest(out)
            same = found["source"] == {"kind": KIND, "path": asked["src"]} and \
                {key: found["options"].get(key) for key in ("splits", "full_decode")} == \
                {key: asked[key] for key in ("splits", "full_decode")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            same = False
        if not same:
            fail(f"--out {out} already holds a {MANIFEST} of another run; adopt into another --out")
        shutil.rmtree(out / SCRATCH, ignore_errors=True)
        return True
    record = out / SCRATCH / RUN_FILE
    if record.exists() and json.loads(record.read_text()) != asked:
        fail(f"--out {out} holds an unfinished adoption asked otherwise ({record}); use the same options")
    if record.exists():
        print(f"prep: resuming the unfinished adoption in {out}", file=sys.stderr)
    return False


def _require_empty(src, out):
    """Another --out must be new or empty (or hold this adoption, unfinished): its links and indexes are prep's."""
    if out.resolve() != src.resolve() and out.exists() and not (out / SCRATCH / RUN_FILE).exists() and \
            any(p.name != SCRATCH for p in out.iterdir()):
        fail(f"--out {out} is not empty and holds no prep run; choose a new or empty directory")


def _shards(src, out, splits):
    """[(split, link name without .tar, path of the original)] of the shards to adopt: the tars of --src (its own
    and one folder down) that name their split; refused in one line where they cannot be adopted."""
    names = _tars(src)
    packed = next((name for name in names if name.endswith(COMPRESSED)), None)
    if packed:
        fail(f"--src {src}: {packed} is compressed, and a compressed tar cannot be read by offset; decompress it "
             "and adopt the .tar")
    by_split = shards_by_split(names)
    missing = [split for split in splits if not by_split.get(split)]
    if missing:
        fail(f"--src {src}: no WebDataset shards of {', '.join(missing)} (tars named *-train-*.tar, "
             "*-validation-*.tar or *-val-*.tar, or in a train/ or val/ folder)")
    beside = out.resolve() == src.resolve()
    shards = [(split, _link_name(name, beside, src), src / name) for split in splits for name in by_split[split]]
    links = [link for _, link, _ in shards]
    if len(set(links)) < len(links):
        fail(f"--src {src}: two shards would have the same name in --out {out}; adopt each folder on its own")
    return shards


def _tars(src):
    """Relative names of the files in `src` and its folders, one level down."""
    names = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.is_file():
            names.append(entry.name)
        elif entry.is_dir() and entry.name != SCRATCH:
            names += [f"{entry.name}/{e.name}" for e in sorted(os.scandir(entry.path), key=lambda e: e.name)
                      if e.is_file()]
    return names


def _link_name(name, beside, src):
    """The shard's name in the output, without .tar: its own beside it; its path with / as - in another --out (a
    manifest names files of the dataset's own folder)."""
    if beside and "/" in name:
        fail(f"--src {src}: {name} is in a folder, and a manifest beside the shards names files of its own folder; "
             "give --out DIR to adopt them into DIR (links to the originals)")
    return name[: -len(".tar")].replace("/", "-")


def _adopt_all(src, out, shards, args):
    """{link name: ShardRecord} of every shard, adopted by the worker pool; a shard done earlier is not read again."""
    classes = imagenet1k_wnids()
    records, waiting = {}, []
    with worker_pool(args.workers) as pool, progress(total=len(shards), unit="tar", desc="adopt") as bar:
        for split, link, original in shards:
            _link(out, link, original)
            record = finished(out, link)
            if record is None:
                waiting.append(pool.submit(adopt_shard, str(out), link, split, classes, args.full_decode))
            else:
                records[link] = record
                bar.update()
        for future in waiting:
            record = future.result()
            if isinstance(record, Refusal):
                _refuse(record)
            records[record.name] = record
            bar.update()
    return records


def _refuse(refusal):
    fail(str(refusal))


def _link(out, link, original):
    """In another --out, a symbolic link to the original shard (absolute: the output may move, the source not)."""
    path = out / f"{link}.tar"
    if path.resolve() == original.resolve():
        return
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(original.resolve())


def adopt_shard(out, link, split, classes, full_decode):
    """The ShardRecord of one shard (a worker task), after its index is written; a Refusal (returned, to be said
    in one line by the command) if it cannot be adopted."""
    tar = Path(out, f"{link}.tar")
    try:
        kept, as_is = _read_samples(tar, split, classes, full_decode)
    except Refusal as refusal:
        return refusal
    from wds2idx import IndexCreator  # DALI's own indexer, as prep's shards get theirs

    index_part = Path(out, SCRATCH, f"{link}.idx.part")
    with IndexCreator(str(tar), str(index_part), verbose=False) as indexer:
        indexer.create_index()
    os.replace(index_part, Path(out, f"{link}.idx"))
    record = ShardRecord(link, split, tar.stat().st_size, file_digest(tar), kept=kept, reencoded=as_is)
    write_atomically(record_path(out, link), record.to_json())
    return record


def _read_samples(tar, split, classes, full_decode):
    """([Kept] in tar order, [images kept as they are]) of a shard; Refusal for what cannot be adopted."""
    shown = tar.name
    with open(tar, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            raise Refusal(f"{shown}: gzip-compressed, and a compressed tar cannot be read by offset; decompress it")
    members, unsafe = scan(tar, shown)
    if unsafe:
        raise Refusal(f"{shown}: member {unsafe[0]['member']!r}: {unsafe[0]['reason']}")
    samples, problems = group(members)
    if problems:
        raise Refusal(f"{shown}: sample {problems[0][0]}: {problems[0][1]}")
    kept, as_is, fd = [], [], os.open(tar, os.O_RDONLY)
    try:
        for key, parts in samples:
            label = _sample_label(fd, shown, key, parts, classes, set(samples[0][1]))
            reason = _image_reason(fd, shown, key, parts["jpg"], full_decode)
            if reason:
                as_is.append({"split": split, "key": key, "source": f"{shown}:{key}.jpg", "reason": reason})
            kept.append(Kept(key, label))
    finally:
        os.close(fd)
    return kept, as_is


def _sample_label(fd, shown, key, parts, classes, first_parts):
    """The sample's class number; Refusal unless it has its .jpg, a .cls naming a class, and the members of the
    shard's first sample (a DALI index needs the same members in every sample)."""
    if "jpg" not in parts or "cls" not in parts:
        lacking = " and ".join(f".{ext}" for ext in ("jpg", "cls") if ext not in parts)
        raise Refusal(f"{shown}: sample {key} has no {lacking} (adopted shards need <key>.jpg and <key>.cls)")
    if set(parts) != first_parts:
        raise Refusal(f"{shown}: sample {key} has the members {sorted(parts)}, the shard's first "
                      f"{sorted(first_parts)}; every sample needs the same")
    label = read_label(fd, parts["cls"], classes)
    if label is None:
        raise Refusal(f"{shown}: {key}.cls is no class number below {len(classes)} (ImageNet-1k's sorted-WNID ranks)")
    problem = label_problem(key, label, classes)
    if problem:
        raise Refusal(f"{shown}: {problem}")
    return label


def _image_reason(fd, shown, key, member, full_decode):
    """Why the image is not a plain RGB JPEG (kept as it is), or None; Refusal for one that does not decode."""
    try:
        return quirk(os.pread(fd, member.size, member.offset), full_decode=full_decode)
    except Rejected as rejected:
        raise Refusal(f"{shown}: {key}.jpg: {rejected.args[0]}; adopt rewrites nothing and a DALI loader cannot skip "
                      "it: prep a copy instead (which rejects and lists it)") from None


def _finish(args, out, shards, records, started):
    """The counts checked, the summary printed and the manifest written; the exit status."""
    by_split = {split: [records[link] for s, link, _ in shards if s == split] for split in args.splits}
    options = {"adopt": True, "splits": args.splits, "full_decode": args.full_decode, "layout": "shards"}
    result = manifest.build(KIND, args.src, options, imagenet1k_wnids(), by_split, [], [])
    result["as_is"] = result.pop("reencoded")  # kept as they are, not re-encoded
    src = Path(args.src)
    counts = timm_counts(LocalFiles(src), set(_tars(src)))
    expected = {split: counts.get(split) for split in args.splits}
    problems = report.count_problems(expected, result, [])
    print(report.summary(expected, {**result, "reencoded": []}, time.perf_counter() - started, problems,
                         {split: 0 for split in args.splits}))
    if result["as_is"]:
        print(f"  {len(result['as_is'])} images kept as they are (listed in {MANIFEST} as as_is): the loaders decode "
              "them, prep would have re-encoded them")
    if problems:
        print(f"prep: the shards hold other counts than {src}'s _info.json, so {out} gets no {MANIFEST}",
              file=sys.stderr)
        return 1
    manifest.write(out, result)
    shutil.rmtree(out / SCRATCH)
    return 0
