"""The benches' default data: prep samples made once under build/bench, then reused. The default one is
ImageNet-sized (about 500x375 JPEGs at quality 90), shards and folder layout, with at least as many train images as
a bench reads in one epoch; `bench loaders --remote`'s is such a sample in shards small enough to read in windows."""
import math
from pathlib import Path

from common.layout import has_manifest

ROOT = Path("build/bench/data")
CLASSES = 10
VAL_PER_CLASS = 4
REMOTE_ROOT = Path("build/bench/remote")
REMOTE_IMAGES, REMOTE_SHARD = 3200, 100  # 32 train shards


def imagenet_sized_shards(train_images):
    per_class = math.ceil(train_images / CLASSES)
    return prepped_sample(ROOT / f"{CLASSES}x{per_class}", ["--layout", "both"], classes=CLASSES,
                          train_per_class=per_class, val_per_class=VAL_PER_CLASS, size="imagenet")


def remote_shards():
    """An ImageNet-sized sample of REMOTE_IMAGES train images in shards of REMOTE_SHARD (enough for windows)."""
    return prepped_sample(REMOTE_ROOT, ["--shard-size", str(REMOTE_SHARD)], classes=CLASSES,
                          train_per_class=REMOTE_IMAGES // CLASSES, val_per_class=VAL_PER_CLASS, size="imagenet")


def prepped_sample(out, prep_flags=(), **sample):
    """The shards of prep.sample's write_sample(**sample) under `out`, prepped with `prep_flags`; made once."""
    from prep import imagenet
    from prep.sample import write_sample

    shards = out / "shards"
    if not has_manifest(shards):
        write_sample(out / "src", progress=True, **sample)
        if imagenet.main(["--src", str(out / "src"), "--out", str(shards), *prep_flags]):
            raise SystemExit(f"bench: prep of the sample in {out / 'src'} failed")
    return shards
