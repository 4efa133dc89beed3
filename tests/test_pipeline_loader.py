"""The loader contract, checked on every backend this machine can run, on the CPU.

The data: bench.colours' extracted tree of solid-colour JPEGs, one colour per image, made into shards (and
the folder layout) by `python -m prep.imagenet`. Crops, flips and resizes keep a solid colour, so each
output image still says which sample it was, and its label can be checked against that sample's class.
Every test names its device; the GPU tests at the end skip without one.
"""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import pipeline
from bench.colours import CLASSES, TRAIN, VAL, identify, in_range, sample_class, write_tree
from common.errors import CorruptSample, DecodeError, MissingData
from common.layout import read_index
from common.options import partition
from pipeline import dataset, sampling
from pipeline.readers import ShardReader, open_reader

ROOT = Path(__file__).resolve().parents[1]
CROP, VAL_SIZE, BATCH = 32, 36, 8

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="nvidia-dali is not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DECODING = ["cpu", pytest.param("dali-cpu", marks=needs_dali)]
ALL_CPU = [*DECODING, "synthetic"]


def prep(src, out):
    result = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", str(src), "--out", str(out),
                             "--layout", "both", "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    src = tmp_path_factory.mktemp("colours")
    write_tree(src)
    return prep(src, tmp_path_factory.mktemp("colour-prep") / "out")


@pytest.fixture(scope="module")
def folders(shards, tmp_path_factory):
    """The DeepLearningExamples layout alone: train/ val/ and their file lists, no shards or manifest."""
    out = tmp_path_factory.mktemp("colour-folders")
    for name in ("train", "val"):
        shutil.copytree(shards / name, out / name)
        shutil.copy(shards / f"{name}_list.txt", out)
    return out


def make(data, split, backend, **settings):
    """A loader of this file's sizes; `settings`: DataOptions fields or make_loader's keywords."""
    options, rest = partition(pipeline.DataOptions, {"loader": backend, "batch_size": BATCH, "crop_size": CROP,
                                                     "val_size": VAL_SIZE, "workers": 2, **settings})
    return pipeline.make_loader(data, split, options, **{"device": "cpu", **rest})


def read_epoch(loader, epoch=0, start=0):
    """(sample ids, labels) of one pass, checked batch by batch while each batch is still valid."""
    loader.set_epoch(epoch, start)
    ids, labels = [], []
    for images, batch_labels in loader:
        ids.extend(identify(images))
        labels.extend(batch_labels.tolist())
    return np.array(ids), np.array(labels)


def test_the_cpu_backends_labels_lie_in_its_rings_rows_beside_their_pixels(shards):
    """Where a GPU's copy of them comes from: one pinned row per slot (pinned there), so that copy never waits."""
    loader = make(shards, "train", "cpu")
    rows = loader._ring.labels.untyped_storage().data_ptr()
    ids, labels = [], []
    for images, batch_labels in loader:
        assert batch_labels.untyped_storage().data_ptr() == rows
        ids.extend(identify(images))
        labels.extend(batch_labels.tolist())
    assert np.array_equal(labels, sample_class(np.array(ids)))


@pytest.mark.parametrize("backend", ALL_CPU)
@pytest.mark.parametrize("split, steps", [("train", TRAIN // BATCH), ("val", -(-VAL // BATCH))])
@pytest.mark.parametrize("dtype, channels_last", [(torch.float32, False), (torch.bfloat16, True)])
def test_batches_have_the_promised_shape_dtype_layout_and_range(shards, backend, split, steps, dtype,
                                                                channels_last):
    loader = make(shards, split, backend, dtype=dtype, channels_last=channels_last)
    assert len(loader) == steps
    assert loader.num_classes == len(CLASSES)
    format = torch.channels_last if channels_last else torch.contiguous_format
    batches = 0
    for images, labels in loader:
        batches += 1
        assert images.shape[1:] == (3, CROP, CROP) and 0 < len(images) <= BATCH
        assert images.dtype == dtype and images.is_contiguous(memory_format=format)
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert ((labels >= 0) & (labels < len(CLASSES))).all()
        assert in_range(images)
    assert batches == steps
    assert loader.skipped == 0


@pytest.mark.parametrize("backend", DECODING)
@pytest.mark.parametrize("layout", ["shards", "folders"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_labels_stay_with_their_images(request, backend, layout, split):
    data = request.getfixturevalue(layout)
    ids, labels = read_epoch(make(data, split, backend))
    assert np.array_equal(labels, sample_class(ids))
    if split == "train":
        assert len(set(ids)) == len(ids) == TRAIN
    else:
        assert sorted(ids) == list(range(TRAIN, TRAIN + VAL))


@pytest.mark.parametrize("backend", DECODING)
def test_set_epoch_reorders_deterministically(shards, backend):
    loader = make(shards, "train", backend)
    first, _ = read_epoch(loader, epoch=0)
    second, _ = read_epoch(loader, epoch=1)
    again, _ = read_epoch(make(shards, "train", backend), epoch=1)
    assert not np.array_equal(first, second)
    assert np.array_equal(second, again)
    assert sorted(first) == sorted(second) == list(range(TRAIN))


@needs_dali
@pytest.mark.parametrize("layout", ["shards", "folders"])
@pytest.mark.parametrize("split, epoch", [("train", 0), ("train", 3), ("val", 0)])
def test_cpu_and_dali_read_the_same_sequence(request, layout, split, epoch):
    data = request.getfixturevalue(layout)
    cpu, _ = read_epoch(make(data, split, "cpu"), epoch)
    dali, _ = read_epoch(make(data, split, "dali-cpu"), epoch)
    assert np.array_equal(cpu, dali)


@needs_dali
def test_dali_builds_one_pipeline_for_all_passes(shards, monkeypatch):
    from pipeline import dali

    original, built = dali._pipeline, []

    def counted(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(dali, "_pipeline", counted)
    loader = make(shards, "train", "dali-cpu")
    for epoch in range(3):
        read_epoch(loader, epoch)
    assert len(built) == 1


@pytest.mark.parametrize("backend", DECODING)
def test_a_pass_left_early_leaves_the_next_pass_whole(shards, backend):
    loader = make(shards, "train", backend)
    loader.set_epoch(0)
    batches = iter(loader)
    next(batches)
    del batches  # the consumer stopped after one batch (a step cap, --stop-step-num)
    ids, labels = read_epoch(loader, epoch=1)
    assert np.array_equal(ids, read_epoch(make(shards, "train", "cpu"), epoch=1)[0])
    assert np.array_equal(labels, sample_class(ids))


@pytest.mark.parametrize("backend", ALL_CPU)
@pytest.mark.parametrize("split", ["train", "val"])
def test_steps_caps_the_epoch(shards, backend, split):
    loader = make(shards, split, backend, max_steps=2)
    assert len(loader) == 2 == sum(1 for _ in loader)


# --- passes resumed at a position of the epoch -----------------------------------------------------------------

def kept_batches(loader, epoch, start=0):
    """Every batch of a pass, copied out of the loader's batch memory (the cpu backend reuses it)."""
    loader.set_epoch(epoch, start)
    return [(images.clone(), labels.clone()) for images, labels in loader]


@pytest.mark.parametrize("backend", DECODING)
def test_a_resumed_pass_reads_the_samples_of_the_unbroken_pass_from_there(shards, backend):
    steps_done = 3
    unbroken = kept_batches(make(shards, "train", backend), epoch=1)
    loader = make(shards, "train", backend)
    resumed = kept_batches(loader, epoch=1, start=steps_done * BATCH)
    assert len(loader) == len(resumed) == len(unbroken) - steps_done
    for (images, labels), (again, again_labels) in zip(unbroken[steps_done:], resumed):
        assert np.array_equal(identify(images), identify(again)) and torch.equal(labels, again_labels)


def test_a_resumed_cpu_pass_gives_the_images_of_the_unbroken_pass_bit_for_bit(sample_shards):
    """On photographs, where another crop or flip shows (a crop of a solid colour is the same colour): the cpu
    backend seeds a batch's crops by its micro-batch's number in the epoch, not by its place in the pass."""
    steps_done, steps = 3, 3
    unbroken = kept_batches(make(sample_shards, "train", "cpu", max_steps=steps_done + steps), epoch=1)
    resumed = kept_batches(make(sample_shards, "train", "cpu", max_steps=steps), epoch=1, start=steps_done * BATCH)
    assert len(resumed) == steps
    for (images, labels), (again, again_labels) in zip(unbroken[steps_done:], resumed):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)


def colour_ids(data):
    """The colour-coded image (bench.colours' number) of each train sample number of the shards."""
    reader = open_reader(dataset.open_dataset(data).split("train"))
    return np.array([int(reader.describe(i).rsplit("_", 1)[1].split(".")[0]) for i in range(len(reader))])


@pytest.mark.parametrize("backend", DECODING)
def test_a_resumed_pass_reads_nothing_before_its_start(shards, backend, tmp_path, monkeypatch):
    """Every sample number the reader is asked for, recorded in a file: the cpu backend reads in forked workers."""
    ids_of = colour_ids(shards)
    record = tmp_path / "reads"
    original = ShardReader.read

    def recorded(reader, i):
        with open(record, "a") as f:
            f.write(f"{i}\n")
        return original(reader, i)

    monkeypatch.setattr(ShardReader, "read", recorded)
    start = 2 * BATCH + 3  # not a step boundary: where a resume on another world size can land
    ids, _ = read_epoch(make(shards, "train", backend), epoch=2, start=start)
    steps = (TRAIN - start) // BATCH
    expected = sampling.epoch_order(TRAIN, seed=0, epoch=2)[start:start + steps * BATCH]
    assert np.array_equal(ids, ids_of[expected])
    assert sorted(int(line) for line in record.read_text().split()) == sorted(expected)


@pytest.mark.parametrize("backend", ALL_CPU)
def test_len_is_the_next_pass_and_a_pass_from_the_end_is_empty(shards, backend):
    loader = make(shards, "train", backend)
    loader.set_epoch(0, start=TRAIN - 2 * BATCH + 1)
    assert len(loader) == 1 == sum(1 for _ in loader)
    loader.set_epoch(0, start=TRAIN)
    assert len(loader) == 0 == sum(1 for _ in loader)
    loader.set_epoch(1)
    assert len(loader) == TRAIN // BATCH == sum(1 for _ in loader)


@pytest.mark.parametrize("backend", ALL_CPU)
def test_start_is_refused_for_val_and_outside_the_epoch(shards, backend):
    with pytest.raises(ValueError, match="train passes only"):
        make(shards, "val", backend).set_epoch(0, start=BATCH)
    with pytest.raises(ValueError, match="outside the epoch"):
        make(shards, "train", backend).set_epoch(0, start=TRAIN + 1)


@pytest.mark.parametrize("backend", ALL_CPU)
def test_accumulate_makes_a_pass_whole_optimizer_steps(shards, backend):
    loader = make(shards, "train", backend, accumulate=4)  # 48 samples: one step of 4 x 8, 16 dropped
    assert len(loader) == 4 == sum(1 for _ in loader)


def test_synthetic_takes_its_size_from_the_manifest_or_imagenet(shards):
    assert len(make(shards, "train", "synthetic")) == TRAIN // BATCH
    assert len(make(None, "val", "synthetic")) == 50000 // BATCH
    assert len(make(None, "train", "synthetic", max_steps=5)) == 5


# --- corrupt samples ---------------------------------------------------------------------------------

@pytest.fixture
def damaged(shards, tmp_path):
    """A copy of the shards whose 6th train JPEG lost its start-of-image marker; returns (dir, member)."""
    out = tmp_path / "damaged"
    shutil.copytree(shards, out)
    line = (out / "train-000000.idx").read_text().splitlines()[6].split()  # the sample's (ext, offset, size, name)
    index = read_index(out / "train-000000.idx")
    fd = os.open(out / "train-000000.tar", os.O_WRONLY)
    os.pwrite(fd, b"\0\0", int(index.jpg_offset[5]))
    os.close(fd)
    return out, line[line.index("jpg") + 3]


def test_cpu_skips_and_counts_a_corrupt_sample(damaged):
    data, member = damaged
    loader = make(data, "train", "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, labels = read_epoch(loader)
    assert loader.skipped == 1 and len(ids) == TRAIN - 1
    assert np.array_equal(labels, sample_class(ids))
    assert any(f"train-000000.tar:{member}" in str(w.message) for w in caught)


def test_cpu_strict_names_the_shard_and_key(damaged):
    data, member = damaged
    with pytest.raises(CorruptSample, match=f"train-000000.tar:{member}"):
        read_epoch(make(data, "train", "cpu", strict=True))


@needs_dali
def test_dali_stops_on_a_corrupt_sample_naming_it(damaged):
    data, member = damaged
    with pytest.raises(DecodeError, match=f"could not decode train-000000.tar:{member} .*cpu backend") as raised:
        read_epoch(make(data, "train", "dali-cpu"))
    assert isinstance(raised.value.__cause__, RuntimeError)  # DALI's own report stays attached


@needs_dali
def test_a_dali_failure_that_is_no_decode_error_keeps_its_own_error(shards, monkeypatch):
    from nvidia.dali import fn

    from pipeline import dali

    original = dali._decode_crop_resize

    def crop_beyond_the_image(jpegs, sides, options):
        return fn.crop(original(jpegs, sides, options), crop=(4096, 4096), out_of_bounds_policy="error")

    monkeypatch.setattr(dali, "_decode_crop_resize", crop_beyond_the_image)
    with pytest.raises(RuntimeError) as raised:
        read_epoch(make(shards, "train", "dali-cpu"))
    assert type(raised.value) is not DecodeError
    assert "_decode_crop_resize" in str(raised.value)  # DALI's traceback names the graph function: no "decod" guess


def test_cpu_ring_is_page_locked_only_once_the_workers_are_forked(shards, monkeypatch):
    """A driver may hide page-locked memory from children forked later (ROCm's MADV_DONTFORK): the `cpu` backend
    locks its batch ring for GPU copies after the workers that write it exist. Shown on the CPU: the GPU path's
    batches without the copy to a device."""
    from pipeline import cpu

    workers_at_pin = []
    monkeypatch.setattr(cpu, "_pin", lambda ring: workers_at_pin.append(len(mp.active_children())) or (lambda: None))
    monkeypatch.setattr(cpu, "_pinned", lambda labels: labels)  # no CUDA host allocator here
    before = len(mp.active_children())
    loader = make(shards, "train", "cpu", workers=2)
    loader._on_gpu = True
    assert sum(1 for _ in loader._batches()) == len(loader)
    assert sum(1 for _ in loader._batches()) == len(loader)
    assert workers_at_pin == [before + 2]  # once, with both workers running


def test_bad_data_path_is_a_one_line_error(tmp_path):
    with pytest.raises(MissingData, match="has neither manifest.json nor"):
        make(tmp_path, "train", "cpu")


# --- DDP: two gloo ranks ----------------------------------------------------------------------------

DDP_RUNS = [(backend, batch_size) for backend in ["cpu", *(["dali-cpu"] if HAVE_DALI else [])]
            for batch_size in (BATCH, 5)]  # 5 leaves a train remainder
RESUMED_AT = 18  # samples consumed, say by 3 ranks x 1 step of 6: no step boundary of 2 ranks x 8 or x 5
PASSES = {"train": ("train", 0), "val": ("val", 0), "resumed": ("train", RESUMED_AT)}  # name: (split, start)


def read_as_rank(rank, world, init_file, data, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for backend, batch_size in DDP_RUNS:
            for name, (split, start) in PASSES.items():
                options = pipeline.DataOptions(loader=backend, batch_size=batch_size, crop_size=CROP,
                                               val_size=VAL_SIZE, workers=1)
                loader = pipeline.make_loader(data, split, options, device="cpu")
                ids, labels = read_epoch(loader, start=start)
                results.put(((backend, batch_size, name, rank), (len(loader), ids.tolist(), labels.tolist())))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_split_an_epoch_without_overlap_and_with_equal_steps(shards, tmp_path):
    """And a pass resumed where another world size stopped continues the epoch's order micro-batch by micro-batch,
    rank r taking slice r of each."""
    world = 2
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(read_as_rank, args=(world, tmp_path / "init", shards, results), nprocs=world)
    got = dict(results.get() for _ in range(len(DDP_RUNS) * len(PASSES) * world))
    order = colour_ids(shards)[sampling.epoch_order(TRAIN, seed=0, epoch=0)]
    for backend, batch_size in DDP_RUNS:
        train = [got[backend, batch_size, "train", rank] for rank in range(world)]
        steps = TRAIN // world // batch_size
        assert [length for length, _, _ in train] == [steps] * world, backend
        ids = np.concatenate([ids for _, ids, _ in train])
        assert len(set(ids)) == len(ids) == steps * batch_size * world, backend
        val = [got[backend, batch_size, "val", rank] for rank in range(world)]
        assert sorted(np.concatenate([ids for _, ids, _ in val])) == list(range(TRAIN, TRAIN + VAL)), backend
        resumed = [got[backend, batch_size, "resumed", rank] for rank in range(world)]
        steps = (TRAIN - RESUMED_AT) // (world * batch_size)
        assert [length for length, _, _ in resumed] == [steps] * world, backend
        by_micro_batch = np.concatenate([np.reshape(ids, (steps, batch_size)) for _, ids, _ in resumed], axis=1)
        assert np.array_equal(by_micro_batch.ravel(), order[RESUMED_AT:RESUMED_AT + steps * world * batch_size])
        for _, ids, labels in train + val + resumed:
            assert labels == [sample_class(n) for n in ids], backend


# --- GPU-only paths ----------------------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("backend", ["cpu", pytest.param("dali", marks=needs_dali),
                                     pytest.param("dali-cpu", marks=needs_dali), "synthetic"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_gpu_batches_arrive_on_the_device_normalised_and_paired(shards, backend, split):
    loader = make(shards, split, backend, device="cuda", dtype=torch.bfloat16, channels_last=True)
    ids, labels = [], []
    for images, batch_labels in loader:
        assert images.is_cuda and batch_labels.is_cuda
        assert images.dtype == torch.bfloat16 and images.is_contiguous(memory_format=torch.channels_last)
        ids.extend(identify(images))
        labels.extend(batch_labels.tolist())
    if backend != "synthetic":
        assert np.array_equal(labels, sample_class(np.array(ids)))


def test_dali_without_a_gpu_is_refused_clearly(shards):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="use dali-cpu"):
        make(shards, "train", "dali")


# --- the backend table and the Loader protocol -------------------------------------------------------------

def test_every_backend_in_the_table_keeps_the_loader_protocol(shards):
    for name in pipeline.available_backends(cuda=False):
        loader = make(shards, "train", name)
        assert isinstance(loader, pipeline.Loader), name
        assert (loader.num_classes, loader.samples, loader.skipped) == (len(CLASSES), TRAIN, 0), name
        assert loader.ahead == pipeline.batches_ahead(name, workers=2, device="cpu"), name


def test_availability_follows_the_table():
    rows = {row.name: row for row in pipeline.BACKEND_TABLE}
    without_gpu = pipeline.available_backends(cuda=False)
    assert set(without_gpu) == {name for name, row in rows.items() if not row.needs_cuda and
                                (HAVE_DALI or not row.needs_dali)}
    assert set(pipeline.available_backends(cuda=True)) == {name for name, row in rows.items()
                                                            if HAVE_DALI or not row.needs_dali}
