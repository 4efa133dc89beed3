"""Reading the label files: the ILSVRC2012 devkit (meta.mat + validation ground truth), val_map.txt and the
Kaggle CSVs. Which of them a source uses, and in what order they are looked for: prep.sources.labels.

The devkit numbers classes by ILSVRC2012_ID, an order of its own; everything here speaks WNIDs, and the
caller turns WNIDs into class numbers (sorted rank).
"""
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from prep.tario import WNID, ArchiveError, read_member

META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


class LabelError(Exception):
    """A label file that cannot be used; the message names it."""


@dataclass
class Devkit:
    train_counts: dict   # WNID -> num_train_images
    val_labels: dict     # val key ILSVRC2012_val_%08d -> WNID

    @property
    def classes(self):
        """The leaf WNIDs, sorted."""
        return sorted(self.train_counts)


def load_devkit(path, cap):
    """Read a devkit .tar.gz / .tar or an extracted ILSVRC2012_devkit_t12 directory; no file may exceed `cap` bytes."""
    path = Path(path)
    read = _read_extracted if path.is_dir() else _read_archived
    meta, truth = (read(path, name, cap) for name in (META, GROUND_TRUTH))
    wnid_of_id, train_counts = leaf_synsets(meta, path.name)
    try:
        val_wnids = [wnid_of_id[int(line)] for line in truth.split()]
    except (ValueError, KeyError) as error:
        raise LabelError(f"{path.name}: {GROUND_TRUTH} names no leaf class ILSVRC2012_ID {error}") from None
    # line i of the ground truth labels val image i
    return Devkit(train_counts, {f"ILSVRC2012_val_{i:08d}": wnid for i, wnid in enumerate(val_wnids, 1)})


def _read_archived(path, name, cap):
    try:
        return read_member(path, name, path.name, cap)
    except ArchiveError as error:
        raise LabelError(str(error)) from None


def _read_extracted(path, name, cap):
    file = path / name
    try:
        if file.stat().st_size > cap:
            raise LabelError(f"{file} is larger than {cap} bytes")
        return file.read_bytes()
    except OSError as error:
        raise LabelError(f"{file}: unreadable ({error.strerror or error})") from None


def leaf_synsets(meta, source):
    """({ILSVRC2012_ID: WNID}, {WNID: num_train_images}) of the leaf synsets (num_children == 0)."""
    try:
        synsets = _synsets(meta)
        rows = list(zip(*(synsets[field] for field in ("ILSVRC2012_ID", "WNID", "num_children", "num_train_images"))))
        leaves = [(int(i), str(wnid), int(count)) for i, wnid, children, count in rows if int(children) == 0]
    except Exception as error:  # any failure to parse an untrusted binary file means the same: unusable
        raise LabelError(f"{source}: {META} has no usable synsets table ({type(error).__name__}: {error})") from None
    if not leaves or not all(WNID.fullmatch(wnid) for _, wnid, _ in leaves):
        raise LabelError(f"{source}: {META} lists no leaf synsets with WNIDs like n01440764")
    return {i: wnid for i, wnid, _ in leaves}, {wnid: count for _, wnid, count in leaves}


def _synsets(meta):
    """{field: [value per synset]} of meta.mat's `synsets` struct array.

    mat4py rather than scipy.io: it is pure Python and loads in milliseconds, where scipy.io's import alone takes
    half a second, as long as all the rest of a 100 MB prep run.
    """
    import mat4py

    return mat4py.loadmat(io.BytesIO(meta))["synsets"]


def kaggle_classes(path):
    """WNIDs of LOC_synset_mapping.txt (`n01440764 tench, Tinca tinca`), sorted."""
    wnids = [line.split(maxsplit=1)[0] for line in _lines(path)]
    _check_wnids(path, wnids)
    return sorted(wnids)


def kaggle_val(path):
    """{image id: WNID} from LOC_val_solution.csv; the first token of PredictionString is the class."""
    try:
        with open(path, newline="") as f:
            rows = {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}
    except (KeyError, IndexError, AttributeError, csv.Error, UnicodeDecodeError) as error:  # a short row gives None
        raise LabelError(f"{path}: expected columns ImageId,PredictionString ({error})") from None
    _check_wnids(path, rows.values())
    return rows


def val_map(path):
    """{file stem: WNID} from a val_map.txt (`ILSVRC2012_val_00000001.JPEG n01751748`)."""
    pairs = [line.split() for line in _lines(path)]
    if any(len(pair) != 2 for pair in pairs):
        raise LabelError(f"{path}: expected lines `<file> <wnid>`")
    _check_wnids(path, [wnid for _, wnid in pairs])
    return {name.rsplit(".", 1)[0]: wnid for name, wnid in pairs}


def _lines(path):
    try:
        return [line for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"{path}: unreadable ({error})") from None


def _check_wnids(path, wnids):
    bad = next((w for w in wnids if not WNID.fullmatch(w)), None)
    if bad is not None:
        raise LabelError(f"{path}: {bad!r} is not a WNID like n01440764")
