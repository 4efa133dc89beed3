"""The shard-window order, the one a bounded cache can serve: whole shards permuted, samples shuffled within windows
of W shards. It is consumed exactly as the global order is, so equal steps, every sample at most once and a resume on
another world size hold for it too; a local path can read it, and reads what a URL would."""
import numpy as np
import pytest

import pipeline
from bench.colours import identify
from pipeline import dataset, sampling
from pipeline.readers import open_reader

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

DECODING = ["cpu", pytest.param("dali-cpu", marks=pytest.mark.skipif(not HAVE_DALI, reason="no nvidia-dali"))]
WINDOWS = sampling.ShardWindows((5,) * 20 + (3,), 3)  # 103 samples in 21 shards, the last one short: 7 windows


def shard_of(windows):
    return np.repeat(np.arange(len(windows.shard_samples)), windows.shard_samples)


@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 1), (7, 3)])
def test_each_window_holds_whole_shards_and_every_sample_comes_once(seed, epoch):
    order = sampling.epoch_order(103, seed=seed, epoch=epoch, shard_order=WINDOWS)
    assert sorted(order) == list(range(103))
    windows, window, left = [], set(), dict(enumerate(WINDOWS.shard_samples))
    for shard in shard_of(WINDOWS)[order].tolist():  # a window closes once it has W shards, each of them whole
        window.add(shard)
        left[shard] -= 1
        assert len(window) <= WINDOWS.window
        if len(window) == WINDOWS.window and not any(left[s] for s in window):
            windows.append(window)
            window = set()
    assert [len(w) for w in windows] == [3] * 7 and not window


def test_the_order_depends_on_seed_and_epoch_and_shuffles_inside_each_window():
    def order(seed, epoch):
        return sampling.epoch_order(103, seed=seed, epoch=epoch, shard_order=WINDOWS)

    assert np.array_equal(order(0, 1), order(0, 1))
    assert not np.array_equal(order(0, 1), order(0, 2)) and not np.array_equal(order(0, 1), order(1, 1))
    assert not np.array_equal(np.sort(order(0, 1)[:15]), order(0, 1)[:15])  # not shard after shard


@pytest.mark.parametrize("batch_size, world", [(4, 2), (3, 3), (5, 1)])
def test_ranks_get_equal_steps_and_no_sample_twice(batch_size, world):
    shares = [sampling.train_batches(103, batch_size, rank=r, world=world, seed=3, epoch=1, shard_order=WINDOWS)
              for r in range(world)]
    seen = np.concatenate([share.ravel() for share in shares])
    assert {share.shape for share in shares} == {(103 // (batch_size * world), batch_size)}
    assert len(np.unique(seen)) == len(seen)


def test_a_pass_resumed_on_another_world_size_uses_every_sample_once():
    def consume(batch_size, world, start=0, steps=None):
        return [sampling.train_batches(103, batch_size, rank=r, world=world, seed=5, epoch=2, start=start,
                                       shard_order=WINDOWS)[:steps] for r in range(world)]

    before = consume(4, 2, steps=5)
    after = consume(3, 3, start=5 * 4 * 2)
    used = np.concatenate([share.ravel() for share in before + after])
    assert len(np.unique(used)) == len(used)
    order = sampling.epoch_order(103, seed=5, epoch=2, shard_order=WINDOWS)
    assert set(range(103)) - set(used.tolist()) == set(order[len(used):].tolist())  # only the epoch's tail is left


def colour_ids(data):
    reader = open_reader(dataset.open_dataset(data).split("train"))
    return np.array([int(reader.describe(i).rsplit("_", 1)[1].split(".")[0]) for i in range(len(reader))])


@pytest.mark.parametrize("backend", DECODING)
def test_a_local_path_reads_the_shard_window_order_and_resumes_in_it(window_shards, backend):
    def read(epoch, start=0):
        options = pipeline.DataOptions(loader=backend, batch_size=4, crop_size=32, val_size=36, workers=2,
                                       order="shard-window", window=2)
        loader = pipeline.make_loader(window_shards, "train", options, device="cpu")
        loader.set_epoch(epoch, start)
        return np.concatenate([identify(images) for images, _ in loader]), loader

    ids, loader = read(epoch=1)
    windows = sampling.ShardWindows((5,) * 20, 2)
    assert loader.window == 2
    expected = sampling.epoch_order(100, seed=0, epoch=1, shard_order=windows)
    assert np.array_equal(ids, colour_ids(window_shards)[expected])
    resumed, _ = read(epoch=1, start=42)
    assert np.array_equal(resumed, ids[42:42 + len(resumed)]) and len(resumed) == 56
