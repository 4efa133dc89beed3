"""The benches' default data: an ImageNet-sized prep sample (about 500x375 JPEGs at quality 90), shards and
folder layout, with at least as many train images as a bench reads in one epoch; made once, then reused."""
import math
from pathlib import Path

from common.layout import has_manifest

ROOT = Path("build/bench/data")
CLASSES = 10
VAL_PER_CLASS = 4


def imagenet_sized_shards(train_images):
    from prep import imagenet, sample

    per_class = math.ceil(train_images / CLASSES)
    out = ROOT / f"{CLASSES}x{per_class}"
    shards = out / "shards"
    if not has_manifest(shards):
        sample.write_sample(out / "src", classes=CLASSES, train_per_class=per_class, val_per_class=VAL_PER_CLASS,
                            size="imagenet", progress=True)
        if imagenet.main(["--src", str(out / "src"), "--out", str(shards), "--layout", "both"]):
            raise SystemExit(f"bench: prep of the sample in {out / 'src'} failed")
    return shards
