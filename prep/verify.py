"""Re-check a prep output against its manifest: `python -m prep.verify shards/` (or s3://bucket/prefix/).

Each tar is re-hashed and re-read (size, sha256, member pairs, labels in range, per-class sums) and its
.idx compared with a fresh index from DALI's wds2idx; the folder layout's lists, when present, are checked
against the same counts. Prints one line per mismatch and exits non-zero if there is any. An output at a URL is
checked the same way, one shard at a time through a temp file.
"""
import importlib.util
import json
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path

from common import store
from common.cli import Parser, input_dir_problem
from common.digest import file_digest
from common.errors import BadManifest, DataError
from common.layout import LISTS, MANIFEST, parse_list_line, parse_manifest
from prep import remote
from prep.progress import progress
from prep.shards import SCRATCH
from prep.tario import KEY, unsafe_reason


class Folder:
    """A prep output in a directory on this machine."""

    def __init__(self, root):
        self.root = Path(root)

    def name(self, relative):
        return self.root / relative

    def has(self, relative):
        return self.name(relative).is_file()

    def read_text(self, relative):
        return self.name(relative).read_text()

    def unfinished(self):
        """Whether it holds what a prep run leaves before its manifest: its scratch folder, shards."""
        return (self.root / SCRATCH).is_dir() or any(self.root.glob("*.tar"))

    @contextmanager
    def local(self, *relatives):
        """Paths on this machine of the files `relatives` (that may be missing)."""
        yield [self.name(relative) for relative in relatives]


class Bucket:
    """A prep output at a URL prep writes to; its listing is read once."""

    def __init__(self, url):
        self.url = url
        self.listed = None

    def name(self, relative):
        return store.join(self.url, relative)

    def has(self, relative):
        if self.listed is None:
            self.listed = set(remote.objects(self.url))
        return relative in self.listed

    def read_text(self, relative):
        return store.read_text(self.name(relative))

    def unfinished(self):
        """Whether the prefix holds anything: without a manifest, an upload that stopped."""
        self.has(MANIFEST)
        return bool(self.listed)

    @contextmanager
    def local(self, *relatives):
        """Temp copies of the objects `relatives`, removed after the block (a missing object: a missing file)."""
        with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
            paths = [Path(scratch, f"{number}-{Path(relative).name}") for number, relative in enumerate(relatives)]
            for relative, path in zip(relatives, paths):
                if self.has(relative):
                    store.download(self.name(relative), path)
            yield paths


def place(out):
    """The prep output at `out`, a directory or a URL."""
    return Bucket(out) if store.is_url(out) else Folder(out)


def verify(out):
    """Problems found in the prep output `out` (a Folder or Bucket: see `place`), one line each; empty when
    everything matches."""
    try:
        # the checks every reader of the data makes, in one place (common.layout): JSON, version, class list
        # against per-class counts, shard names inside the dataset
        found = parse_manifest(out.read_text(MANIFEST), out.name(MANIFEST))
        classes, splits = found["classes"], found["splits"]
        _require_fields(splits)
        shards = [shard for entry in splits.values() for shard in entry["shards"]]
        total = sum(shard["bytes"] for shard in shards)
    except BadManifest as error:
        return [str(error)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return [f"{out.name(MANIFEST)}: unreadable manifest ({type(error).__name__}: {error})"]
    if shards and importlib.util.find_spec("wds2idx") is None:
        return [f"checking the {len(shards)} shards' .idx files needs DALI's wds2idx module: "
                "pip install 'imagenet-feed[dali]'"]
    problems = []
    with progress(total=total, unit="B", unit_scale=True, desc="verify") as bar:
        for split, entry in splits.items():
            per_class, all_read = [0] * len(classes), True
            for shard in entry["shards"]:
                labels, shard_problems = check_shard(out, shard, len(classes), bar, adopted(found))
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


def adopted(found):
    """Whether the manifest is of shards adopted as they were (prep.adopt): their samples may hold more members."""
    return isinstance(found.get("source"), dict) and found["source"].get("kind") == "adopted"


def check_shard(out, shard, num_classes, bar, others=False):
    """(labels, problems) of one tar and its index. A damaged tar is one line, and None for its labels: they
    cannot be trusted. An index that is missing or differs is one more line. `others`: a sample may hold members
    besides its .jpg and .cls (an adopted shard's)."""
    with out.local(shard["name"], shard["index"]) as (path, index):
        labels, damage = _read_tar(path, shard, num_classes, bar, others)
        if damage:
            return None, [f"{out.name(shard['name'])}: {'; '.join(damage)}"]
        if not index.is_file():
            return labels, [f"{out.name(shard['index'])}: missing (the index of {shard['name']})"]
        if not _index_matches(path, index):
            return labels, [f"{out.name(shard['index'])}: differs from a fresh wds2idx index of {shard['name']}"]
        return labels, []


def _read_tar(path, shard, num_classes, bar, others):
    """(labels, damage): the tar's labels, and how it departs from its manifest entry (a phrase per fact)."""
    damage = []
    try:
        size = path.stat().st_size
        if size != shard["bytes"]:
            return None, [f"{size} bytes, the manifest says {shard['bytes']}"]
        if file_digest(path, on_chunk=bar.update) != shard["sha256"]:
            damage.append("sha256 differs from the manifest")
        labels = _other_labels(path, num_classes) if others else _labels(path, num_classes)
    except OSError as error:
        return None, [f"unreadable ({error.strerror or error})"]
    except ValueError as error:
        return None, [*damage, str(error)]
    if len(labels) != shard["samples"]:
        damage.append(f"{len(labels)} samples, the manifest says {shard['samples']}")
    return labels, damage


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
                labels.append(_class_index(tar.extractfile(cls).read(), cls.name, num_classes))
    except tarfile.TarError as error:
        raise ValueError(f"not a readable tar ({error})") from None
    return labels


def _class_index(text, name, num_classes):
    """The class index a .cls member `name` holds as `text`; ValueError unless it is one below num_classes."""
    if not (text.isdigit() and int(text) < num_classes):
        raise ValueError(f"{name}: label {text[:20]!r} is not a class index below {num_classes}")
    return int(text)


def _other_labels(path, num_classes):
    """Class index of every sample of an adopted shard; ValueError unless each sample (its members together, as
    webdataset reads them) has one .jpg and one .cls with a valid label."""
    from prep.sources.wds import group

    labels = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            unsafe = next((member.name for member in members if unsafe_reason(member)), None)
            if unsafe:
                raise ValueError(f"member {unsafe!r} is not a plain file")
            samples, problems = group(members)
            if problems:
                raise ValueError(f"sample {problems[0][0]}: {problems[0][1]}")
            for key, parts in samples:
                if "jpg" not in parts or "cls" not in parts:
                    raise ValueError(f"sample {key} lacks its .jpg or .cls")
                labels.append(_class_index(tar.extractfile(parts["cls"]).read().strip(), f"{key}.cls",
                                           num_classes))
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
    if not out.has(LISTS[split]):
        return []
    path, per_class, problems = out.name(LISTS[split]), [0] * len(classes), []
    for number, line in enumerate(out.read_text(LISTS[split]).splitlines(), 1):
        name, label = parse_list_line(line) or ("", -1)
        wnid = name.split("/", 1)[0]
        if not 0 <= label < len(classes) or classes[label] != wnid:
            problems.append(f"{path}:{number}: {line!r} does not match the manifest's classes")
        elif not out.has(f"{split}/{name}"):
            problems.append(f"{path}:{number}: {out.name(f'{split}/{name}')} missing")
        else:
            per_class[label] += 1
    return problems + _compare(LISTS[split], per_class, entry, classes)


def _compare(what, per_class, entry, classes):
    wrong = [f"{what}: class {i} ({classes[i]}) has {n}, the manifest says {entry['per_class'][i]}"
             for i, n in enumerate(per_class) if n != entry["per_class"][i]]
    if sum(entry["per_class"]) != entry["samples"]:
        wrong.append(f"{what}: manifest per-class counts sum to {sum(entry['per_class'])}, not {entry['samples']}")
    return wrong


def parse_args(argv):
    parser = Parser("verify", prog="python -m prep.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a directory or URL written by `python -m prep.imagenet`")
    args = parser.parse_args(argv)
    if "://" not in args.out:
        parser.require(args.out, input_dir_problem(args.out))
    elif not args.out.startswith(remote.WRITABLE):  # the checks list the prefix, which an HTTP server cannot
        parser.error(f"{args.out}: verify reads a directory or a {', '.join(remote.WRITABLE)} URL")
    else:
        parser.require(args.out, remote.client_problem(args.out))
        remote.quiet_clients()
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return check(args.out, place(args.out))
    except DataError as error:  # at a URL: no such bucket (2), or a store that kept failing (1)
        print(f"verify: {error}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None


def check(named, out):
    """Prints the verdict on the prep output `out` (a Folder or Bucket), given as `named`; returns the exit
    status."""
    if not out.has(MANIFEST):
        if out.unfinished():  # an output whose run never finished: it fails the check (damaged, 1)
            raise SystemExit(f"verify: {named}: no {MANIFEST}: its prep run never finished; run the same "
                             "python -m prep.imagenet command again to finish it")
        # not a prep output: data not where it was said to be (2)
        what = "holds the folder layout's file lists but" if any(map(out.has, LISTS.values())) else "is not a dataset:"
        print(f"verify: {named} {what} no {MANIFEST}; verify checks the --out of python -m prep.imagenet",
              file=sys.stderr)
        raise SystemExit(2)
    problems = verify(out)
    for problem in problems:
        print(f"verify: {problem}", file=sys.stderr)
    if problems:
        return 1
    found = json.loads(out.read_text(MANIFEST))
    counts = ", ".join(f"{split} {entry['samples']}" for split, entry in found["splits"].items())
    shards = sum(len(entry["shards"]) for entry in found["splits"].values())
    held = f"{shards} shards, {counts} images; sha256, counts and indexes" if shards else \
        f"the folder layout, {counts} images; counts and folder lists"
    print(f"verify: {named} ok: {held} match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
