"""A colour-coded image set whose every loader output can be checked: image n is one solid colour, COLOURS[n].

Crops, flips and resizes keep a solid colour, so each normalised output image still says which sample it
was (`identify`), its label can be checked against that sample's class (`sample_class`), and its pixel range
against the normalisation. Written as an extracted ImageNet tree (train/<wnid>/, val/<wnid>/) for
`python -m prep.imagenet` to turn into shards and the folder layout.
"""
import numpy as np
import simplejpeg

from pipeline.options import IMAGENET_MEAN, IMAGENET_STD

LEVELS = (20, 75, 130, 185, 240)
COLOURS = np.array([(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS], dtype=np.float64)
CLASSES = [f"n{10000001 + k:08d}" for k in range(6)]
SHAPES = [(48, 64), (64, 48), (40, 40), (90, 120), (300, 400)]  # the last is decoded DCT-scaled at crop 32
TRAIN, VAL = 48, 17  # 48 = 2 ranks x 3 steps x 8; 17 = 8 + 9: rank 0's val share is one sample short of rank 1's
# The normalised range of a channel: what pixel values 0 and 255 become.
LOW = (0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
HIGH = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


def sample_class(n):
    return n % len(CLASSES)


def write_tree(root):
    """train/<wnid>/<wnid>_<n>.JPEG and val/<wnid>/val_<n>.JPEG under `root`, image n filled with COLOURS[n]."""
    for n in range(TRAIN + VAL):
        split, wnid = ("train" if n < TRAIN else "val"), CLASSES[sample_class(n)]
        name = f"{wnid}_{n}.JPEG" if split == "train" else f"val_{n:03d}.JPEG"
        height, width = SHAPES[n % len(SHAPES)]
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[:] = COLOURS[n]
        (root / split / wnid).mkdir(parents=True, exist_ok=True)
        (root / split / wnid / name).write_bytes(simplejpeg.encode_jpeg(pixels, quality=95))
    return root


def identify(images):
    """Which sample each normalised [N, 3, H, W] image shows: the colour nearest its mean pixel."""
    images = images.float().cpu().numpy()
    pixels = images.mean(axis=(2, 3)) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    distances = ((pixels[:, None, :] * 255 - COLOURS[None]) ** 2).sum(-1)
    return distances.argmin(1)


def in_range(images, tolerance=0.02):
    """Whether every channel of a normalised batch lies within what pixel values 0..255 normalise to."""
    per_channel = images.float().transpose(0, 1).reshape(3, -1).cpu().numpy()
    return bool((per_channel.min(1) >= LOW - tolerance).all() and (per_channel.max(1) <= HIGH + tolerance).all())
