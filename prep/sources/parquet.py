"""ImageNet as Hugging Face parquet files: `data/train-00000-of-00294.parquet ...`, `data/validation-...` (the
ILSVRC/imagenet-1k layout and its copies), columns `image` {bytes, path} and `label`, as a local snapshot or at an
hf:// URL.

Parquet gives no byte offsets of its values, so each file is streamed once, a batch of rows at a time (never a
whole file in memory), into a spool in scratch: the image bytes one after another, and a record of where each lies
(key, class). The spools are then read by offset like an archive. A spooled file is done once its record is
written, so a rerun streams only the files not done yet. The spools go with the rest of scratch at the end.

Labels: a parquet written by Hugging Face `datasets` names its classes in the schema metadata (`huggingface` ->
info.features.label, a ClassLabel's names). Those names (WNIDs, or Hugging Face's ImageNet names) must be in
sorted-WNID order, so that the label numbers are this project's: a file whose order differs is refused, not
permuted. Without names the labels are taken as ImageNet-1k's sorted-WNID ranks. A row whose image path carries a
WNID (the Hub's `<stem>_<wnid>.JPEG`) is checked against its label.
"""
import json
import re
from collections import defaultdict
from functools import cached_property
from pathlib import Path

from common.atomic import atomic_file, write_atomically
from prep.progress import progress
from prep.sources.base import Container, Found, Source, SourceError
from prep.sources.hub import (
    FULL_COUNTS,
    HUB_HINT,
    HUB_SPLITS,
    check_room,
    files_of,
    imagenet1k_wnids,
    split_stem,
    wnid_of_name,
)

# `train-00000-of-00294.parquet`; older Hub conversions add `-<hash>` before the suffix
PARQUET = re.compile(r"(?:.*/)?(?P<split>train|validation|val)-(?P<number>\d+)-of-(?P<total>\d+)(?:-[0-9a-f]+)?"
                     r"\.parquet")
BATCH_ROWS = 64  # rows per batch read: a few MB of images at a time
SPOOL = "spool"


class HubParquet(Source):
    kind = "hub-parquet"
    looks_like = "Hugging Face parquet files data/train-NNNNN-of-NNNNN.parquet (ILSVRC/imagenet-1k)"
    label_files = ()

    @staticmethod
    def recognises(root):
        return bool(_by_split(files_of(root).names()))

    def __init__(self, root, splits, scratch, cap):
        super().__init__(root, splits, scratch, cap)
        self.files = files_of(root)
        self.sizes = self.files.names()  # {name: bytes}
        self.by_split = _by_split(self.sizes)
        for split in splits:
            if not self.by_split.get(split):
                raise SourceError(f"--src {root}: no {_hub_name(split)}-NNNNN-of-NNNNN.parquet files (needed for "
                                  f"--splits {split})")
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise SourceError(f"--src {root}: reading parquet needs pyarrow: {HUB_HINT}") from None

    def filed_by_class(self, split):
        return None

    def classes(self):
        return self._declared[1]

    @cached_property
    def _declared(self):
        """(the class names the first file declares or None, the WNIDs they stand for, sorted-WNID order checked)."""
        import pyarrow.parquet as pq

        first = self.by_split[self.splits[0]][0]
        with self.files.open(first) as f:
            names = declared_names(pq.ParquetFile(f).schema_arrow)
        return names, class_wnids(names, self.files.shown(first))

    def expected(self, split):
        """The full set's count where every file of the split is here and the classes are ImageNet-1k's."""
        if _complete(self.by_split[split]) and self.classes() == imagenet1k_wnids():
            return FULL_COUNTS[split]
        return None

    def notes(self):
        lines = []
        for split in self.splits:
            names = self.by_split[split]
            if not _complete(names):
                total = PARQUET.fullmatch(names[0])["total"]
                lines.append(f"{split}: a subset, {len(names)} of the {int(total)} files "
                             f"{_hub_name(split)}-*-of-{total}.parquet; counts not checked against the full set's "
                             f"{FULL_COUNTS[split]:,}")
        if len(self.classes()) != len(imagenet1k_wnids()):
            lines.append(f"the files declare {len(self.classes())} classes, not ImageNet-1k's 1000: counts not "
                         "checked against the full set's")
        if self._declared[0] is None:
            lines.append("no class names in the parquet metadata: labels taken as ImageNet-1k's sorted-WNID ranks")
        return lines

    def containers(self, split, mapper):
        names = self.by_split[split]
        spool_dir = Path(self.scratch, SPOOL)
        spool_dir.mkdir(parents=True, exist_ok=True)
        jobs = mapper(spool_file, [self.files] * len(names), names, [self.sizes[name] for name in names],
                      [spool_dir] * len(names), [self._declared] * len(names))
        spooled = progress(jobs, total=len(names), desc=f"read {split} parquet", unit="file", leave=False)
        for found, name in zip(spooled, names):
            yield Container(name, None, found)


def _by_split(names):
    """{our split: [file names, sorted]} of the parquet files among `names`."""
    found = defaultdict(list)
    for name in names:
        match = PARQUET.fullmatch(name)
        if match:
            found[HUB_SPLITS[match["split"]]].append(name)
    return {split: sorted(files) for split, files in found.items()}


def _hub_name(split):
    return "validation" if split == "val" else split


def _complete(names):
    """Whether `names` are all N files of an `-of-N` set."""
    totals = {int(PARQUET.fullmatch(name)["total"]) for name in names}
    numbers = {int(PARQUET.fullmatch(name)["number"]) for name in names}
    return len(totals) == 1 and numbers == set(range(totals.pop()))


def declared_names(schema):
    """The label's ClassLabel names in a parquet file's `huggingface` schema metadata (an Arrow schema's), or
    None."""
    metadata = schema.metadata or {}
    try:
        label = json.loads(metadata[b"huggingface"])["info"]["features"]["label"]
    except (KeyError, TypeError, ValueError):
        return None
    return list(label["names"]) if isinstance(label, dict) and label.get("_type") == "ClassLabel" else None


def class_wnids(names, shown):
    """The WNIDs the class names stand for, in label order; SourceError naming the file `shown` unless they are
    known and in sorted-WNID order (label i = the i-th WNID sorted). No names: ImageNet-1k's 1000."""
    if names is None:
        return imagenet1k_wnids()
    wnids = [wnid_of_name(name) for name in names]
    unknown = next((name for name, wnid in zip(names, wnids) if wnid is None), None)
    if unknown is not None:
        raise SourceError(f"{shown}: class name {unknown!r} is neither a WNID nor one of ImageNet-1k's 1000 names "
                          "(Hugging Face imagenet-1k's classes.py)")
    ranked = sorted(set(wnids))
    wrong = next((label for label, wnid in enumerate(wnids) if ranked.index(wnid) != label), None)
    if len(ranked) < len(wnids) or wrong is not None:
        label = wrong if wrong is not None else len(ranked)
        raise SourceError(f"{shown}: its label order is not the sorted-WNID order: label {label} is "
                          f"{names[label]!r} ({wnids[label]}), which sorts at {ranked.index(wnids[label])}; prep "
                          "refuses to permute labels silently (re-export the file with sorted classes)")
    return wnids


def spool_file(files, name, size, spool_dir, declared):
    """Found records of the images of the parquet file `name` (`size` bytes, about what its images take), spooled
    into spool_dir (a worker task), refused before it starts where the disk has no room for them; a file spooled by
    an earlier run is read from its record."""
    stem = name.replace("/", "__")
    data, record = Path(spool_dir, f"{stem}.bin"), Path(spool_dir, f"{stem}.json")
    done = _spooled(record, data)
    if done is not None:
        return done
    check_room(spool_dir, size, files.shown(name))
    import pyarrow

    try:
        with files.open(name) as f, atomic_file(data) as out:
            rows = _spool_rows(f, out, declared, files.shown(name), Path(name).name.split(".")[0])
    except pyarrow.ArrowException as error:
        raise SourceError(f"{files.shown(name)}: not a readable parquet file ({str(error).splitlines()[0]})") from None
    found = [Found(f"{key}.JPEG", str(data), offset, size, wnid) for key, wnid, offset, size in rows]
    write_atomically(record, json.dumps({"bytes": data.stat().st_size, "rows": rows}))
    return found


def _spooled(record, data):
    try:
        done = json.loads(record.read_text())
        if data.stat().st_size == done["bytes"]:
            return [Found(f"{key}.JPEG", str(data), offset, size, wnid) for key, wnid, offset, size in done["rows"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _spool_rows(f, out, declared, shown, file_stem):
    """[key, wnid, offset, size] of each row, its image bytes appended to `out`; batch by batch."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(f)
    names, wnids = declared
    schema = parquet.schema_arrow
    if declared_names(schema) != names:
        raise SourceError(f"{shown}: its class names differ from the first file's; the files are not one dataset")
    if not {"image", "label"} <= set(schema.names) or schema.field("image").type.get_field_index("bytes") < 0:
        raise SourceError(f"{shown}: expected the columns image {{bytes, path}} and label; it has "
                          f"{', '.join(schema.names)}")
    rows, offset, number = [], 0, 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["image", "label"]):
        images, labels = batch.column("image"), batch.column("label").to_pylist()
        paths = images.field("path").to_pylist() if images.type.get_field_index("path") >= 0 else [None] * len(labels)
        for data, path, label in zip(images.field("bytes").to_pylist(), paths, labels):
            key, wnid = _row_class(shown, number, path, label, wnids, file_stem)
            data = data or b""
            out.write(data)
            rows.append([key, wnid, offset, len(data)])
            offset, number = offset + len(data), number + 1
    return rows


def _row_class(shown, number, path, label, wnids, file_stem):
    """(key, WNID or None) of a row: the key is the ILSVRC file stem its path gives (else the file's stem and the
    row number); a label past the classes is no class (the image is rejected), a path naming another class than
    its label a refusal."""
    stem, named = split_stem(path) if path else (f"{file_stem}_{number:08d}", None)
    wnid = wnids[label] if label is not None and 0 <= label < len(wnids) else None
    if named and wnid and named != wnid:
        raise SourceError(f"{shown}: row {number} ({path}) is labelled {label} ({wnid}) but its file name names "
                          f"{named}: the labels do not follow the sorted-WNID order")
    return stem, wnid
