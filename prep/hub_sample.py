"""An ILSVRC2012 source that prep reads (such as prep.sample's archives) written again in a Hugging Face Hub layout,
with the same images: to try the Hub paths without the Hub, and for the tests and `bench prep --layout parquet`.

    python -m prep.hub_sample --src ILSVRC2012/ --out DIR --layout parquet|wds

parquet: `data/train-00000-of-0000N.parquet ...`, `data/validation-...`, columns image {bytes, path} and label, the
class names in the `huggingface` schema metadata as Hugging Face `datasets` writes them (ImageNet-1k's names where the
class is one of its 1000, else the WNID), each image's path `<ILSVRC stem>_<wnid>.JPEG` as the Hub's loader named
them; its classes are the source's own, sorted (the Hub's files name all 1000). wds: timm's
`imagenet1k-train-NNNN.tar`, `imagenet1k-validation-NN.tar` (members .cls, .jpg, .json in webdataset's order) and
its `_info.json`, labels ImageNet-1k's sorted-WNID ranks (or the classes' sorted ranks where one is not among its
1000). `order` writes the parquet labels in another order, which prep must refuse.
"""
import io
import json
import math
import sys
import tarfile
import tempfile
from pathlib import Path

from common.atomic import atomic_file, write_atomically
from common.cli import Parser, integer, output_problem
from common.layout import SPLITS
from prep.sources import open_source
from prep.sources.hub import imagenet1k, imagenet1k_wnids

HUB_NAMES = {"train": "train", "val": "validation"}
LAYOUTS = ("parquet", "wds")


def samples(src):
    """{split: [(key, wnid, image bytes)]} of the source, as prep lists it (sorted by key), read lazily."""
    with tempfile.TemporaryDirectory() as scratch:
        source = open_source(src, list(SPLITS), Path(scratch), 64 << 20)
        classes = source.classes()
        listed = {split: source.listing(split).samples for split in SPLITS}
        return classes, {split: [(s.key, s.wnid, s) for s in found] for split, found in listed.items()}


def label_order(classes):
    """The classes in label order: ImageNet-1k's 1000 when every class is one of them, else the classes sorted."""
    table = imagenet1k_wnids()
    return table if set(classes) <= set(table) else sorted(classes)


def class_names(order):
    """The ClassLabel names of `order`: Hugging Face's ImageNet-1k name of each class, else its WNID."""
    names = dict(imagenet1k())
    return [names.get(wnid, wnid) for wnid in order]


def write_parquet(src, out, rows_per_file=1000, row_group=100, order=None):
    """The source as Hub parquet files in out/data/; `order`: the classes in label order (default sorted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    classes, listed = samples(src)
    order = order or sorted(classes)
    features = {"image": {"decode": True, "id": None, "_type": "Image"},
                "label": {"names": class_names(order), "id": None, "_type": "ClassLabel"}}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())]).with_metadata(metadata)
    (Path(out) / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in listed.items():
        count = max(1, math.ceil(len(rows) / rows_per_file))
        for number in range(count):
            chunk = rows[number * rows_per_file:(number + 1) * rows_per_file]
            path = Path(out, "data", f"{HUB_NAMES[split]}-{number:05d}-of-{count:05d}.parquet")
            with atomic_file(path) as f, pq.ParquetWriter(f, schema) as writer:
                for start in range(0, len(chunk), row_group):
                    group = chunk[start:start + row_group]
                    images = [{"bytes": sample.read(), "path": f"{key}_{wnid}.JPEG"} for key, wnid, sample in group]
                    table = pa.table({"image": images, "label": [order.index(wnid) for _, wnid, _ in group]},
                                     schema=schema)
                    writer.write_table(table)
    return out


def write_wds(src, out, per_shard=100):
    """The source as timm's WebDataset shards in `out`, with its _info.json."""
    classes, listed = samples(src)
    order = label_order(classes)
    Path(out).mkdir(parents=True, exist_ok=True)
    info = {"name": "imagenet1k", "splits": {}}
    for split, rows in listed.items():
        count = max(1, math.ceil(len(rows) / per_shard))
        digits = max(1, math.ceil(math.log10(count))) if count > 1 else 1  # timm's own width: 1024 -> 4, 64 -> 2
        names, lengths = [], []
        for number in range(count):
            chunk = rows[number * per_shard:(number + 1) * per_shard]
            names.append(f"imagenet1k-{HUB_NAMES[split]}-{number:0{digits}d}.tar")
            lengths.append(len(chunk))
            _write_shard(Path(out, names[-1]), chunk, order)
        info["splits"][HUB_NAMES[split]] = {"name": HUB_NAMES[split], "filenames": names, "shard_lengths": lengths,
                                            "num_samples": sum(lengths)}
    write_atomically(Path(out, "_info.json"), json.dumps(info, indent=4))
    return out


def _write_shard(path, rows, order):
    with atomic_file(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, wnid, sample in rows:
            label = order.index(wnid)
            meta = {"label": label, "filename": f"{key}.JPEG"}
            members = (("cls", str(label).encode()), ("jpg", sample.read()), ("json", json.dumps(meta).encode()))
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode = len(data), 0o444
                tar.addfile(info, io.BytesIO(data))


def parse_args(argv):
    parser = Parser("prep.hub_sample", prog="python -m prep.hub_sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="an ILSVRC2012 source prep reads (prep.sample's archives)")
    parser.add_argument("--out", required=True, help="directory to write the Hub layout into (created)")
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--per-file", type=integer(1), default=1000, help="rows per parquet file, samples per tar")
    args = parser.parse_args(argv)
    parser.require(f"--out {args.out}", output_problem(args.out))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.layout == "parquet":
        write_parquet(args.src, args.out, rows_per_file=args.per_file)
    else:
        write_wds(args.src, args.out, per_shard=args.per_file)
    print(f"prep.hub_sample: {args.src} written as {args.layout} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
