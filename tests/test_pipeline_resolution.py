"""Progressive resizing (Loader.set_resolution) and the RandomResizedCrop ranges (crop_scale, crop_ratio), on the CPU.

Two data sets: bench.colours' solid-colour JPEGs, whose every output image says which sample it was at any side
(so a resized pass can be checked sample by sample against an unresized one), and images of a known gradient,
whose crops can be predicted pixel for pixel.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch

import pipeline
from bench.colours import CLASSES, TRAIN, identify, in_range, sample_class, write_tree
from common.options import partition
from pipeline import crops
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parents[1]
CROP, VAL_SIZE, BATCH = 48, 56, 8
SIDES = (32, 40, 48)  # of epochs 0, 1, 2: up to crop_size, the largest

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="nvidia-dali is not installed")
ALL_CPU = ["cpu", pytest.param("dali-cpu", marks=needs_dali), "synthetic"]


def prep(src, out, *args):
    result = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", str(src), "--out", str(out),
                             "--workers", "1", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    src = tmp_path_factory.mktemp("colours")
    write_tree(src)
    return prep(src, tmp_path_factory.mktemp("colour-prep") / "out")


def make(data, split, backend, **settings):
    """A loader of this file's sizes; `settings`: DataOptions fields or make_loader's keywords."""
    options, rest = partition(pipeline.DataOptions, {"loader": backend, "batch_size": BATCH, "crop_size": CROP,
                                                     "val_size": VAL_SIZE, "workers": 2, **settings})
    return pipeline.make_loader(data, split, options, **{"device": "cpu", **rest})


def read_pass(loader, epoch):
    """(every batch's images, copied out of the loader's batch memory, all labels) of one pass."""
    loader.set_epoch(epoch)
    images, labels = [], []
    for batch, batch_labels in loader:
        images.append(batch.clone())
        labels.extend(batch_labels.tolist())
    return images, np.array(labels)


# --- set_resolution: the side of the next passes ---------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL_CPU)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: the cpu workers' scratch buffers
@pytest.mark.parametrize("channels_last", [False, True])
def test_each_pass_has_the_side_set_for_it_and_the_samples_of_an_unresized_loader(shards, backend, dtype,
                                                                                  channels_last):
    resized = make(shards, "train", backend, dtype=dtype, channels_last=channels_last)
    unresized = make(shards, "train", backend, dtype=dtype, channels_last=channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for epoch, side in enumerate(SIDES):
        resized.set_resolution(side)
        images, labels = read_pass(resized, epoch)
        full_images, full_labels = read_pass(unresized, epoch)
        assert len(images) == len(resized) == TRAIN // BATCH
        for batch in images:
            assert batch.shape == (BATCH, 3, side, side) and batch.dtype == dtype
            assert batch.is_contiguous(memory_format=layout)
            assert in_range(batch)
        assert np.array_equal(labels, full_labels)
        if backend == "synthetic":  # its one resident batch, cut to the side at its top left
            for batch, full in zip(images, full_images):
                assert torch.equal(batch, full[..., :side, :side])
        else:
            ids = np.concatenate([identify(batch) for batch in images])
            assert np.array_equal(ids, np.concatenate([identify(full) for full in full_images]))
            assert np.array_equal(labels, sample_class(ids))
            assert sorted(ids) == list(range(TRAIN))


def test_the_cpu_backend_gives_the_unresized_images_bit_for_bit_back_at_crop_size(sample_shards):
    """On photographs, where a stale or misplaced pixel shows: after passes at smaller sides, whose batches fill the
    heads of the ring's slots, a pass at crop_size is the unresized loader's pass (crops are seeded per batch)."""
    resized = make(sample_shards, "train", "cpu", max_steps=3, channels_last=True)
    resized.set_resolution(24)
    small, _ = read_pass(resized, epoch=0)
    resized.set_resolution(CROP)
    again, labels = read_pass(resized, epoch=1)
    unresized, full_labels = read_pass(make(sample_shards, "train", "cpu", max_steps=3, channels_last=True), epoch=1)
    assert [batch.shape[-1] for batch in small] == [24] * 3
    assert np.array_equal(labels, full_labels)
    for batch, full in zip(again, unresized):
        assert torch.equal(batch, full)


def test_the_cpu_backend_keeps_its_workers_and_ring_across_sides(shards):
    loader = make(shards, "train", "cpu")
    ring = loader._ring.storage.data_ptr()
    pids = []
    for epoch, side in enumerate(SIDES):
        loader.set_resolution(side)
        read_pass(loader, epoch)
        pids.append([worker.pid for worker in loader._loader._iterator._workers])
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2]
    assert loader._ring.storage.data_ptr() == ring


@needs_dali
def test_dali_builds_one_pipeline_for_every_side(shards, monkeypatch):
    from pipeline import dali

    original, built = dali._pipeline, []

    def counted(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(dali, "_pipeline", counted)
    loader = make(shards, "train", "dali-cpu")
    iterators = []
    for epoch, side in enumerate((*SIDES, SIDES[0])):
        loader.set_resolution(side)
        images, _ = read_pass(loader, epoch)
        assert {batch.shape[-1] for batch in images} == {side}
        iterators.append(loader._iterator)
    assert len(built) == 1
    assert all(iterator is iterators[0] for iterator in iterators)


@pytest.mark.parametrize("backend", ALL_CPU)
def test_a_pass_left_early_leaves_the_next_pass_at_its_own_side(shards, backend):
    loader = make(shards, "train", backend)
    loader.set_epoch(0)
    batches = iter(loader)
    next(batches)
    del batches  # left after one batch at crop_size, with batches prepared ahead of it
    loader.set_resolution(SIDES[0])
    images, labels = read_pass(loader, epoch=1)
    assert {batch.shape[-1] for batch in images} == {SIDES[0]} and len(images) == TRAIN // BATCH
    if backend != "synthetic":
        assert np.array_equal(labels, sample_class(np.concatenate([identify(batch) for batch in images])))


# --- refusals ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL_CPU)
@pytest.mark.parametrize("size", [CROP + 1, 0, -8, 32.0, "32"])
def test_a_side_outside_1_to_crop_size_is_refused_and_changes_nothing(shards, backend, size):
    loader = make(shards, "train", backend, max_steps=1)
    loader.set_resolution(SIDES[0])
    with pytest.raises(ValueError, match=rf"^pipeline: set_resolution size .*crop_size={CROP}.*got {size!r}$"):
        loader.set_resolution(size)
    (images, _), = loader
    assert images.shape[-2:] == (SIDES[0], SIDES[0])


@pytest.mark.parametrize("backend", ALL_CPU)
def test_set_resolution_is_refused_for_val(shards, backend):
    with pytest.raises(ValueError, match="^pipeline: set_resolution applies to train passes only"):
        make(shards, "val", backend).set_resolution(SIDES[0])


@pytest.mark.parametrize("keyword, value", [
    ("crop_scale", (0, 1)), ("crop_scale", (0.5, 0.2)), ("crop_scale", (0.5, 1.5)), ("crop_scale", (0.3,)),
    ("crop_scale", 0.5), ("crop_scale", ("a", "b")), ("crop_ratio", (0, 1)), ("crop_ratio", (2, 1)),
    ("crop_ratio", (-1, 1)), ("crop_ratio", (1, 2, 3)), ("crop_ratio", None)])
def test_a_bad_crop_range_is_a_one_line_error_naming_it(shards, keyword, value):
    flag = "--" + keyword.replace("_", "-")
    refused = rf"^pipeline: {flag}( must be a \(min, max\) pair with 0 < min| takes 2 values| \()"
    with pytest.raises(ValueError, match=refused) as raised:
        make(shards, "train", "cpu", **{keyword: value})
    assert "\n" not in str(raised.value)


def test_the_crop_ranges_default_to_torchvisions(shards):
    options = make(shards, "train", "cpu")._options
    assert (options.crop_scale, options.crop_ratio) == (crops.SCALE, crops.RATIO) == ((0.08, 1.0), (3 / 4, 4 / 3))


# --- crop_scale and crop_ratio ---------------------------------------------------------------------------------

GRADIENT_SIDE = 64
GRADIENT_SHAPES = [(64, 64), (64, 96)]  # class 0 square, class 1 wide: its unit-ratio crop is the centre square
GRADIENT_PER_CLASS = 4


def gradient(height, width):
    """Rising down the rows and away from the middle column: any other crop than the expected one shows."""
    rows = 2 * np.arange(height)[:, None]
    cols = 2 * np.abs(np.arange(width)[None, :] - (width - 1) / 2)
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = np.round(rows + cols)[..., None].astype(np.uint8)
    return pixels


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    src = tmp_path_factory.mktemp("gradients")
    for label, (height, width) in enumerate(GRADIENT_SHAPES):
        folder = src / "train" / CLASSES[label]
        folder.mkdir(parents=True)
        for n in range(GRADIENT_PER_CLASS):
            (folder / f"{CLASSES[label]}_{n}.JPEG").write_bytes(simplejpeg.encode_jpeg(gradient(height, width), 95))
    return prep(src, tmp_path_factory.mktemp("gradient-prep") / "out", "--splits", "train")


def expected_crops():
    """Per class, the normalised [3, S, S] image a unit scale and ratio give: the decoded image's centre square
    (the whole of a square one), which at side S = GRADIENT_SIDE needs no resize."""
    expected = []
    for height, width in GRADIENT_SHAPES:
        decoded = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(gradient(height, width), 95), colorspace="RGB",
                                         fastdct=True)  # the bytes prep kept, decoded as the cpu backend does
        left = (width - GRADIENT_SIDE) // 2
        square = decoded[:, left:left + GRADIENT_SIDE] / 255
        expected.append(torch.from_numpy(((square - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)).float())
    return torch.stack(expected)


def distances(loader):
    """Per class, each of its images' largest difference to the unit-ratio crop of that class, or to its mirror image
    (a train image is flipped at random)."""
    expected = expected_crops()
    images, labels = read_pass(loader, epoch=0)
    images, expected = torch.cat(images), expected[labels]
    distance = torch.minimum(*((images - crop).abs().amax(dim=(1, 2, 3)) for crop in (expected, expected.flip(-1))))
    assert sorted(labels.tolist()) == [0] * GRADIENT_PER_CLASS + [1] * GRADIENT_PER_CLASS
    return [distance[labels == label] for label in range(len(GRADIENT_SHAPES))]


def test_a_unit_scale_and_ratio_box_is_the_whole_square_or_the_centre_square():
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert crops.random_resized_crop(rng, 64, 64, (1, 1), (1, 1)) == (0, 0, 64, 64)
        assert crops.random_resized_crop(rng, 64, 96, (1, 1), (1, 1)) == (0, 16, 64, 64)


def gradient_loader(data, backend, **settings):
    options = pipeline.DataOptions(loader=backend, batch_size=4, crop_size=GRADIENT_SIDE, workers=1, **settings)
    return pipeline.make_loader(data, "train", options, device="cpu")


def test_the_cpu_backend_crops_with_the_scale_and_ratio_it_is_given(gradients):
    square, wide = distances(gradient_loader(gradients, "cpu", crop_scale=(1, 1), crop_ratio=(1, 1)))
    assert (square < 1e-4).all() and (wide < 1e-4).all(), (square, wide)
    square, wide = distances(gradient_loader(gradients, "cpu"))
    assert (square > 0.5).any() and (wide > 0.5).any(), (square, wide)  # torchvision's ranges crop elsewhere


@needs_dali
def test_dali_crops_with_the_scale_and_ratio_it_is_given(gradients):
    """DALI's decoder is not libjpeg-turbo's fast IDCT: close, not equal. Its fallback box for a wide image is its
    own; the square image's only unit-area unit-ratio box is the whole image."""
    square, _ = distances(gradient_loader(gradients, "dali-cpu", crop_scale=(1, 1), crop_ratio=(1, 1)))
    assert (square < 0.1).all(), square
    square, _ = distances(gradient_loader(gradients, "dali-cpu"))
    assert (square > 0.5).any(), square
