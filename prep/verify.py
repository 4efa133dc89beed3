"""Re-check a prep output against its manifest: `python -m prep.verify shards/`.

Each tar is re-hashed and re-read (size, sha256, member pairs, labels in range, per-class sums) and its
.idx compared with a fresh index from DALI's wds2idx; the folder layout's lists, when present, are checked
against the same counts. Prints one line per mismatch and exits non-zero if there is any.
"""
import hashlib
import importlib.util
import sys
import tarfile
import tempfile
from operator import itemgetter
from pathlib import Path

from common.cli import Parser, input_dir_problem
from common.layout import LISTS, MANIFEST, parse_list_line, read_manifest
from prep.progress import progress
from prep.tario import CHUNK, KEY, unsafe_reason


def verify(out):
    """Problems found in the prep output at `out`, one line each; empty when everything matches."""
    out = Path(out)
    try:
        found = read_manifest(out)
        classes, splits = found["classes"], found["splits"]
        _require_fields(splits)
        shards = [shard for entry in splits.values() for shard in entry["shards"]]
        total = sum(shard["bytes"] for shard in shards)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return [f"{out / MANIFEST}: unreadable manifest ({type(error).__name__}: {error})"]
    if shards and importlib.util.find_spec("wds2idx") is None:
        return [f"checking the {len(shards)} shards' .idx files needs DALI's wds2idx module: "
                "pip install 'imagenet-feed[dali]'"]
    problems = []
    with progress(total=total, unit="B", unit_scale=True, desc="verify") as bar:
        for split, entry in splits.items():
            per_class, all_read = [0] * len(classes), True
            for shard in entry["shards"]:
                labels, shard_problems = check_shard(out, shard, len(classes), bar)
                problems += shard_problems
                all_read = all_read and labels is not None
                for label in labels or ():
                    per_class[label] += 1
            if entry["shards"] and all_read:  # else the damaged shard's line is the news, not the counts it skews
                problems += _compare(f"{split} shards", per_class, entry, classes)
            problems += check_list(out, split, entry, classes)
    return problems


SPLIT_FIELDS = itemgetter("samples", "per_class", "shards")
SHARD_FIELDS = itemgetter("name", "index", "samples", "bytes", "sha256")


def _require_fields(splits):
    """KeyError or TypeError now if the manifest lacks a field the checks read, rather than halfway through them."""
    for entry in splits.values():
        SPLIT_FIELDS(entry)
        for shard in entry["shards"]:
            SHARD_FIELDS(shard)


def check_shard(out, shard, num_classes, bar):
    """(labels, problems) of one tar and its index. A damaged tar is one line, and None for its labels: they
    cannot be trusted. An index that is missing or differs is one more line."""
    path, index = out / shard["name"], out / shard["index"]
    labels, damage = _read_tar(path, shard, num_classes, bar)
    if damage:
        return None, [f"{path}: {'; '.join(damage)}"]
    if not index.is_file():
        return labels, [f"{index}: missing (the index of {shard['name']})"]
    if not _index_matches(path, index):
        return labels, [f"{index}: differs from a fresh wds2idx index of {shard['name']}"]
    return labels, []


def _read_tar(path, shard, num_classes, bar):
    """(labels, damage): the tar's labels, and how it departs from its manifest entry (a phrase per fact)."""
    damage = []
    try:
        size = path.stat().st_size
        if size != shard["bytes"]:
            return None, [f"{size} bytes, the manifest says {shard['bytes']}"]
        if _sha256(path, bar) != shard["sha256"]:
            damage.append("sha256 differs from the manifest")
        labels = _labels(path, num_classes)
    except OSError as error:
        return None, [f"unreadable ({error.strerror or error})"]
    except ValueError as error:
        return None, [*damage, str(error)]
    if len(labels) != shard["samples"]:
        damage.append(f"{len(labels)} samples, the manifest says {shard['samples']}")
    return labels, damage


def _sha256(path, bar):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _labels(path, num_classes):
    """Class index of every sample; ValueError unless members are <key>.jpg, <key>.cls pairs with valid labels."""
    labels = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            if len(members) % 2:
                raise ValueError("odd number of members: a sample lacks its .jpg or .cls")
            for jpg, cls in zip(members[::2], members[1::2]):
                key = jpg.name[: -len(".jpg")]
                if unsafe_reason(jpg) or unsafe_reason(cls) or not KEY.fullmatch(key) or \
                        (jpg.name, cls.name) != (f"{key}.jpg", f"{key}.cls"):
                    raise ValueError(f"members {jpg.name!r}, {cls.name!r} are not a <key>.jpg, <key>.cls pair")
                text = tar.extractfile(cls).read()
                if not (text.isdigit() and int(text) < num_classes):
                    raise ValueError(f"{cls.name}: label {text[:20]!r} is not a class index below {num_classes}")
                labels.append(int(text))
    except tarfile.TarError as error:
        raise ValueError(f"not a readable tar ({error})") from None
    return labels


def _index_matches(tar, index):
    from wds2idx import IndexCreator

    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch, "fresh.idx")
        with IndexCreator(str(tar), str(fresh), verbose=False) as indexer:
            indexer.create_index()
        try:
            return index.read_bytes() == fresh.read_bytes()
        except OSError:
            return False


def check_list(out, split, entry, classes):
    """The folder layout's <split>_list.txt, if written: labels and counts as in the manifest, files present."""
    path = out / LISTS[split]
    if not path.exists():
        return []
    per_class, problems = [0] * len(classes), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        name, label = parse_list_line(line) or ("", -1)
        wnid = name.split("/", 1)[0]
        if not 0 <= label < len(classes) or classes[label] != wnid:
            problems.append(f"{path}:{number}: {line!r} does not match the manifest's classes")
        elif not (out / split / name).is_file():
            problems.append(f"{path}:{number}: {out / split / name} missing")
        else:
            per_class[label] += 1
    return problems + _compare(path.name, per_class, entry, classes)


def _compare(what, per_class, entry, classes):
    wrong = [f"{what}: class {i} ({classes[i]}) has {n}, the manifest says {entry['per_class'][i]}"
             for i, n in enumerate(per_class) if n != entry["per_class"][i]]
    if sum(entry["per_class"]) != entry["samples"]:
        wrong.append(f"{what}: manifest per-class counts sum to {sum(entry['per_class'])}, not {entry['samples']}")
    return wrong


def parse_args(argv):
    parser = Parser("verify", prog="python -m prep.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a directory written by `python -m prep.imagenet`")
    args = parser.parse_args(argv)
    parser.require(args.out, input_dir_problem(args.out))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not Path(args.out, MANIFEST).is_file():  # a directory whose run never finished: it fails the check
        raise SystemExit(f"verify: {args.out}: no {MANIFEST}; expected the --out of python -m prep.imagenet")
    problems = verify(args.out)
    for problem in problems:
        print(f"verify: {problem}", file=sys.stderr)
    if problems:
        return 1
    found = read_manifest(args.out)
    counts = ", ".join(f"{split} {entry['samples']}" for split, entry in found["splits"].items())
    shards = sum(len(entry["shards"]) for entry in found["splits"].values())
    checked = "sha256, counts and indexes" if shards else "counts and folder lists"
    print(f"verify: {args.out} ok: {shards} shards, {counts} images; {checked} match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
