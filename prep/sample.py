"""Write a small synthetic ILSVRC2012 source: the three archives of the real download, in their real layout.

`python -m prep.sample --out DIR` writes

    ILSVRC2012_img_train.tar       plain tar of <wnid>.tar, each holding <wnid>_<n>.JPEG
    ILSVRC2012_img_val.tar         flat tar of ILSVRC2012_val_%08d.JPEG, classes interleaved
    ILSVRC2012_devkit_t12.tar.gz   data/meta.mat (synsets struct array) and the validation ground truth

Each class is a coloured, striped shape (its own hue, shape and stripe angle) at a random place and scale
on a noisy background, so a small CNN learns it quickly at low resolution. Like the real train archive,
the default sample holds one CMYK JPEG, one greyscale JPEG and one PNG named .JPEG; `--corrupt` adds a
truncated and an empty file. The same --seed gives the same bytes.
"""
import argparse
import colorsys
import gzip
import io
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from common.atomic import atomic_file
from common.cli import Parser, out_of_range, output_problem
from prep.progress import progress as progress_bar

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
ARCHIVE_MTIME = 1337000000  # May 2012, when the real archives were made
CHILDREN_PER_PARENT = 4
QUIRKS = ("cmyk", "grayscale", "png")  # what real ImageNet holds: 22 CMYK JPEGs, greyscale ones, one PNG
CORRUPTIONS = ("truncated", "empty")
SPOOL_BYTES = 64 << 20

# The first classes of the real list (sorted WNIDs); further classes get synthetic WNIDs after them.
REAL_CLASSES = (
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
    ("n01494475", "hammerhead, hammerhead shark"),
    ("n01496331", "electric ray, crampfish, numbfish, torpedo"),
    ("n01498041", "stingray"),
    ("n01514668", "cock"),
    ("n01514859", "hen"),
    ("n01518878", "ostrich, Struthio camelus"),
    ("n01530575", "brambling, Fringilla montifringilla"),
    ("n01531178", "goldfinch, Carduelis carduelis"),
    ("n01532829", "house finch, linnet, Carpodacus mexicanus"),
    ("n01534433", "junco, snowbird"),
    ("n01537544", "indigo bunting, indigo finch, indigo bird, Passerina cyanea"),
    ("n01558993", "robin, American robin, Turdus migratorius"),
    ("n01560419", "bulbul"),
    ("n01580077", "jay"),
    ("n01582220", "magpie"),
    ("n01592084", "chickadee"),
)
SIZES = ("small", "imagenet")
MAX_CLASSES = 1000  # ILSVRC2012's; past about 1,060 the synthetic WNIDs would leave the nXXXXXXXX form
# Aspect ratios (width / height) of real photos, most of them 4:3 landscape.
ASPECTS = np.array([4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3, 5 / 4, 16 / 9])
ASPECT_WEIGHTS = np.array([0.5, 0.15, 0.08, 0.12, 0.06, 0.05, 0.04])
# (grain, detail): per-pixel and fine-scale noise amplitudes; at "imagenet" size enough texture that JPEG
# sizes resemble photos (about 110 KB at 500x375, quality 90) rather than flat colour.
TEXTURE = {"small": (6.0, 0.0), "imagenet": (24.0, 24.0)}


@dataclass(frozen=True)
class ClassStyle:
    hue: float
    shape: int
    angle: float
    period: float  # stripe period as a fraction of the object radius


def class_wnids(n):
    """`n` WNIDs in sorted order: the real first classes, then synthetic ones after them."""
    real = [(wnid, words) for wnid, words in REAL_CLASSES[:n]]
    synthetic = [(f"n0{1600000 + 7919 * k:07d}", f"synthetic class {k}") for k in range(n - len(real))]
    return real + synthetic


SHAPES = (
    lambda dx, dy: dx * dx + dy * dy < 1.0,                                   # disc
    lambda dx, dy: np.maximum(np.abs(dx), np.abs(dy)) < 0.8,                  # square
    lambda dx, dy: np.abs(dx) + np.abs(dy) < 1.0,                             # diamond
    lambda dx, dy: (dy < 0.7) & (np.abs(dx) < (dy + 0.9) * 0.65),             # triangle
    lambda dx, dy: np.abs(dx * dx + dy * dy - 0.6) < 0.4,                     # ring
)


def class_style(index):
    golden = 0.6180339887
    return ClassStyle(hue=(index * golden) % 1.0, shape=index % len(SHAPES),
                      angle=np.deg2rad((index * 47) % 180), period=(0.35, 0.55)[index // len(SHAPES) % 2])


def image_size(rng, size):
    if size == "small":
        return int(rng.integers(64, 161)), int(rng.integers(64, 161))
    aspect = rng.choice(ASPECTS, p=ASPECT_WEIGHTS)
    long_side = 500 if rng.random() < 0.85 else int(rng.integers(300, 500))
    if aspect >= 1:
        return round(long_side / aspect), long_side
    return long_side, round(long_side * aspect)


def render(rng, style, height, width, texture):
    """One RGB uint8 image of the class `style` on a random noisy background."""
    background = rng.uniform(0, 255, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(background).resize((width, height), Image.BICUBIC), np.float32)
    image = image * 0.6 + 50.0

    radius = min(height, width) * rng.uniform(0.22, 0.42)
    cx = rng.uniform(0.8 * radius, width - 0.8 * radius)
    cy = rng.uniform(0.8 * radius, height - 0.8 * radius)
    dy = (np.arange(height, dtype=np.float32)[:, None] - cy) / radius
    dx = (np.arange(width, dtype=np.float32)[None, :] - cx) / radius
    mask = SHAPES[style.shape](dx, dy)

    angle = style.angle + rng.normal(0.0, np.deg2rad(6))
    phase = (dx * np.cos(angle) + dy * np.sin(angle)) / style.period + rng.uniform(0, 1)
    bands = (phase % 1.0 < 0.5).astype(np.float32)
    hue = (style.hue + rng.normal(0.0, 0.015)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)), np.float32) * 255
    foreground = colour * (0.4 + 0.6 * bands)[..., None]
    image = np.where(mask[..., None], foreground, image)

    grain, detail = texture
    if detail:
        fine = rng.integers(0, 256, (height // 3 + 1, width // 3 + 1, 3), dtype=np.uint8)
        fine = np.asarray(Image.fromarray(fine).resize((width, height), Image.BICUBIC), np.float32)
        image += (fine - 128.0) * (detail / 128.0)
    image += (rng.random(image.shape, dtype=np.float32) - 0.5) * (grain * 12 ** 0.5)  # uniform, std = grain
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels, quality, kind="rgb"):
    """JPEG bytes of `pixels`; `kind` plants the quirks of the real archive (cmyk, grayscale, png)."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, "PNG")
    else:
        mode = {"rgb": "RGB", "cmyk": "CMYK", "grayscale": "L"}[kind]
        image.convert(mode).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_image(seed_words, style, size, quality, kind="rgb"):
    rng = np.random.default_rng(seed_words)
    height, width = image_size(rng, size)
    return encode(render(rng, style, height, width, TEXTURE[size]), quality, kind)


# --- archives ---------------------------------------------------------------------------------------

def tar_member(name, size, directory=False):
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = ARCHIVE_MTIME
    return info


def add_bytes(tar, name, data):
    tar.addfile(tar_member(name, len(data)), io.BytesIO(data))


def open_tar(fileobj):
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)


def planted_kinds(quirks, corrupt):
    return list(QUIRKS if quirks else ()) + list(CORRUPTIONS if corrupt else ())


def plant(train_keys, quirks, corrupt):
    """Choose which train files carry a quirk: {key: kind}, spread over the first classes."""
    kinds = planted_kinds(quirks, corrupt)
    wnids = list(train_keys)
    planted = {}
    for i, kind in enumerate(kinds):
        keys = train_keys[wnids[i % len(wnids)]]
        planted[keys[(i // len(wnids)) % len(keys)]] = kind
    return planted


def corrupt_bytes(data, kind):
    return {"truncated": data[: len(data) // 2], "empty": b""}.get(kind, data)


def add_spooled(tar, name, spool):
    """Add a spooled temp file as member `name` (large class tars spill to disk instead of memory)."""
    info = tar_member(name, spool.tell())
    spool.seek(0)
    tar.addfile(info, spool)


def train_numbers(rng, count):
    """Distinct file numbers like the real ones (n01440764_10026): sparse, in archive order."""
    return sorted(rng.choice(max(15000, 2 * count), size=count, replace=False) + 1)


def write_train(path, wnids, train_keys, planted, size, quality, seed, progress):
    with atomic_file(path) as f, open_tar(f) as outer:
        for index, wnid in enumerate(wnids):
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=path.parent) as spool:
                with open_tar(spool) as inner:
                    for key in train_keys[wnid]:
                        kind = planted.get(key, "rgb")
                        number = int(key.rsplit("_", 1)[1])
                        data = make_image([seed, 0, index, number], class_style(index), size, quality,
                                          kind if kind in QUIRKS else "rgb")
                        add_bytes(inner, f"{key}.JPEG", corrupt_bytes(data, kind))
                        progress.update()
                add_spooled(outer, f"{wnid}.tar", spool)


def write_val(path, val_classes, size, quality, seed, progress):
    with atomic_file(path) as f, open_tar(f) as tar:
        for i, index in enumerate(val_classes, start=1):
            data = make_image([seed, 1, i], class_style(index), size, quality)
            add_bytes(tar, f"ILSVRC2012_val_{i:08d}.JPEG", data)
            progress.update()


# --- devkit ------------------------------------------------------------------------------------------

def synsets(classes, ilsvrc_ids, train_counts):
    """The meta.mat `synsets` struct array: leaves (the classes, ID order) then their ancestors."""
    leaves = sorted(range(len(classes)), key=lambda i: ilsvrc_ids[i])
    rows = [(ilsvrc_ids[i], classes[i][0], classes[i][1], f"a synthetic class: {classes[i][1]}",
             0, np.zeros(0, np.uint16), 0, train_counts[i]) for i in leaves]
    groups = [leaves[k:k + CHILDREN_PER_PARENT] for k in range(0, len(leaves), CHILDREN_PER_PARENT)]
    next_id = len(classes) + 1
    parent_ids = []
    for g, members in enumerate(groups):
        parent_ids.append(next_id + g)
        rows.append((next_id + g, f"n0{9900000 + g:07d}", f"group {g}", f"the parent of {len(members)} classes",
                     len(members), np.array([ilsvrc_ids[i] for i in members], np.uint16), 1,
                     sum(train_counts[i] for i in members)))
    rows.append((next_id + len(groups), "n00001740", "entity", "that which is perceived to have its own existence",
                 len(groups), np.array(parent_ids, np.uint16), 2, sum(train_counts)))
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images")
    types = (np.uint16, str, str, str, np.uint16, None, np.uint8, np.uint32)
    table = np.empty((len(rows), 1), dtype=[(name, object) for name in fields])
    for r, row in enumerate(rows):
        table[r, 0] = tuple(value if cast is None else cast(value) for value, cast in zip(row, types))
    return table


def meta_mat_bytes(table):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": table}, format="5")
    data = bytearray(buffer.getvalue())
    # scipy stamps the creation time into the 116-byte text header; fix it so the same seed gives the same bytes
    data[:116] = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: prep.sample".ljust(116)
    return bytes(data)


def write_devkit(path, table, ground_truth):
    with atomic_file(path) as f, \
            gzip.GzipFile(filename=path.name[: -len(".gz")], mode="wb", fileobj=f, mtime=ARCHIVE_MTIME) as gz, \
            open_tar(gz) as tar:
        for directory in (DEVKIT_DIR, f"{DEVKIT_DIR}/data"):
            tar.addfile(tar_member(directory, 0, directory=True))
        add_bytes(tar, f"{DEVKIT_DIR}/data/meta.mat", meta_mat_bytes(table))
        add_bytes(tar, f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt",
                  "".join(f"{i}\n" for i in ground_truth).encode())


# --- entry points ------------------------------------------------------------------------------------

def check_options(classes, train_per_class, val_per_class, size, quality, seed, quirks, corrupt):
    """ValueError naming the flag of the first option write_sample cannot use."""
    ranges = {"--classes": (classes, 1, MAX_CLASSES), "--train-per-class": (train_per_class, 1, None),
              "--val-per-class": (val_per_class, 0, None), "--quality": (quality, 1, 100), "--seed": (seed, 0, None)}
    for flag, (value, least, most) in ranges.items():
        problem = out_of_range(value, least, most)
        if problem:
            raise ValueError(f"{flag} {problem}")
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, not {size}")
    planted = planted_kinds(quirks, corrupt)
    if len(planted) > classes * train_per_class:
        raise ValueError(f"--classes {classes} x --train-per-class {train_per_class} train images cannot hold the "
                         f"{len(planted)} planted files ({', '.join(planted)}); give more, or --no-quirks")


def write_sample(out, *, classes=10, train_per_class=100, val_per_class=20, size="small", quality=90, seed=0,
                 quirks=True, corrupt=False, progress=False):
    """Write the three ILSVRC2012 archives into `out` (made if missing) and return what was written; ValueError
    for an option it cannot use (check_options), OSError for an `out` it cannot write.

    The result: out, archives (name -> path), wnids (sorted, = class index order), ilsvrc_ids (wnid -> devkit
    ID), train (wnid -> member keys, archive order), val_wnids (wnid of val image i+1), planted (train key ->
    cmyk|grayscale|png|truncated|empty), images, bytes (sum of the archive sizes).
    """
    check_options(classes, train_per_class, val_per_class, size, quality, seed, quirks, corrupt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    named = class_wnids(classes)
    wnids = [wnid for wnid, _ in named]
    ilsvrc_ids = [int(i) + 1 for i in rng.permutation(classes)]  # the devkit's own order, not sorted-WNID order
    train_keys = {wnid: [f"{wnid}_{n}" for n in train_numbers(rng, train_per_class)] for wnid in wnids}
    val_classes = [int(i) for i in rng.permutation(np.repeat(np.arange(classes), val_per_class))]
    planted = plant(train_keys, quirks, corrupt)

    archives = {name: out / name for name in (TRAIN_TAR, VAL_TAR, DEVKIT_TAR)}
    total = classes * (train_per_class + val_per_class)
    with progress_bar(total=total, unit="img", desc="prep.sample", disable=not progress) as bar:
        write_train(archives[TRAIN_TAR], wnids, train_keys, planted, size, quality, seed, bar)
        write_val(archives[VAL_TAR], val_classes, size, quality, seed, bar)
    table = synsets(named, ilsvrc_ids, [train_per_class] * classes)
    write_devkit(archives[DEVKIT_TAR], table, [ilsvrc_ids[i] for i in val_classes])
    return {
        "out": str(out),
        "archives": {name: str(path) for name, path in archives.items()},
        "wnids": wnids,
        "ilsvrc_ids": dict(zip(wnids, ilsvrc_ids)),
        "train": train_keys,
        "val_wnids": [wnids[i] for i in val_classes],
        "planted": planted,
        "images": total,
        "bytes": sum(path.stat().st_size for path in archives.values()),
    }


def parse_args(argv):
    parser = Parser("prep.sample", prog="python -m prep.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for the three archives (created if missing)")
    parser.add_argument("--classes", type=int, default=10, help=f"at most {MAX_CLASSES} (default 10)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="small: sides 64-160 px; imagenet: about 500x375 like the real photos")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quirks", action=argparse.BooleanOptionalAction, default=True,
                        help="plant one CMYK, one greyscale and one PNG-named-.JPEG train image (default on)")
    parser.add_argument("--corrupt", action="store_true", help="also plant a truncated and an empty train file")
    args = parser.parse_args(argv)
    parser.require(f"--out {args.out}", output_problem(args.out))
    try:
        check_options(args.classes, args.train_per_class, args.val_per_class, args.size, args.quality, args.seed,
                      args.quirks, args.corrupt)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    written = write_sample(args.out, classes=args.classes, train_per_class=args.train_per_class,
                           val_per_class=args.val_per_class, size=args.size, quality=args.quality, seed=args.seed,
                           quirks=args.quirks, corrupt=args.corrupt, progress=True)
    print(f"prep.sample: {written['images']} images in {len(written['wnids'])} classes, "
          f"{written['bytes'] / 1e6:.1f} MB in {written['out']}")
    for key, kind in written["planted"].items():
        print(f"  planted {kind}: {key}.JPEG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
