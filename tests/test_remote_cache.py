"""The node-local shard cache's promises, against a real HTTP server on 127.0.0.1 (conftest.py's LoopbackHTTP, which
counts requests and injects faults): a copy whose bytes are not the manifest's is fetched again, then refused with a
DamagedShard naming its URL; a shard that keeps failing stops the pass in one line naming its URL; processes sharing
a cache directory download each shard once; and make_loader's keywords are checked."""
import pytest
import torch.multiprocessing as mp

import pipeline
from common import store
from common.errors import DamagedShard, MissingData, NoRoom
from common.layout import read_manifest

CROP, VAL_SIZE, BATCH = 32, 36, 2
DAMAGED = "train-000003.tar"


def make(data, split="train", backend="cpu", **settings):
    options = pipeline.DataOptions(**{"loader": backend, "batch_size": BATCH, "crop_size": CROP,
                                      "val_size": VAL_SIZE, "workers": 1, **settings})
    return pipeline.make_loader(data, split, options, device="cpu")


def read_epoch(loader, epoch=0):
    loader.set_epoch(epoch)
    return sum(len(labels) for _, labels in loader)


def train_shards(shards):
    return read_manifest(shards)["splits"]["train"]["shards"]


def whole(shards):
    """A cache limit that holds every train shard: nothing is evicted."""
    return sum(shard["bytes"] for shard in train_shards(shards))


def path_of(url, name):
    return f"/{url.split('/', 3)[3]}/{name}"


def test_a_copy_that_differs_from_the_manifest_is_fetched_again(http_store, http_window_shards, window_shards,
                                                                 tmp_path):
    path = path_of(http_window_shards, DAMAGED)
    http_store.corrupt[path] = 1
    loader = make(http_window_shards, cache_dir=tmp_path, cache_limit=whole(window_shards))
    assert read_epoch(loader) == read_manifest(window_shards)["splits"]["train"]["samples"]
    assert http_store.gets(path) == 2
    assert loader.cache.stats.downloads == len(train_shards(window_shards)) + 1


@pytest.mark.parametrize("backend", ["cpu", pytest.param("dali-cpu", marks=pytest.mark.skipif(
    not pipeline.available_backends(cuda=False).count("dali-cpu"), reason="no nvidia-dali"))])
def test_a_copy_that_differs_twice_is_refused_naming_its_url(http_store, http_window_shards, window_shards, tmp_path,
                                                            backend):
    path = path_of(http_window_shards, DAMAGED)
    http_store.corrupt[path] = 2
    loader = make(http_window_shards, backend=backend, cache_dir=tmp_path, cache_limit=whole(window_shards))
    with pytest.raises(DamagedShard, match=f"{store.join(http_window_shards, DAMAGED)}: two downloads differ from "
                                           "the manifest's sha256") as refused:
        read_epoch(loader)
    assert "\n" not in str(refused.value)
    assert http_store.gets(path) == 2
    assert not list((tmp_path / "shards").glob(f"{DAMAGED[:-4]}*"))  # neither the copy nor its part is left


def test_a_shard_that_keeps_failing_stops_the_pass_in_one_line_naming_its_url(http_store, http_window_shards,
                                                                              window_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "FIRST_BACKOFF_S", 0.001)
    http_store.failing.add(path_of(http_window_shards, DAMAGED))
    loader = make(http_window_shards, cache_dir=tmp_path, cache_limit=whole(window_shards))
    with pytest.raises(store.RemoteError, match=f"{store.join(http_window_shards, DAMAGED)}: failed "
                                                f"{store.ATTEMPTS} times") as failed:
        read_epoch(loader)
    assert "\n" not in str(failed.value) and failed.value.exit_status == 1


def read_in_a_process(rank, url, cache_dir, limit, counts):
    loader = make(url, cache_dir=cache_dir, cache_limit=limit)
    counts.put((read_epoch(loader), loader.cache.stats.downloads))


def test_processes_sharing_a_cache_download_each_shard_once(http_store, http_window_shards, window_shards, tmp_path):
    """Two processes read the same epoch at once through one cache directory, as the ranks of a node do."""
    counts = mp.get_context("spawn").SimpleQueue()
    mp.spawn(read_in_a_process, args=(http_window_shards, tmp_path, whole(window_shards), counts), nprocs=2)
    read, downloads = zip(*(counts.get() for _ in range(2)))
    shards = train_shards(window_shards)
    assert read == (read_manifest(window_shards)["splits"]["train"]["samples"],) * 2
    assert sum(downloads) == len(shards)
    assert [http_store.gets(path_of(http_window_shards, shard["name"])) for shard in shards] == [1] * len(shards)


def test_a_url_without_a_manifest_is_missing_data(s3_bucket, tmp_path):
    with pytest.raises(MissingData, match="s3://test-data/nothing-here has no manifest.json"):
        make(f"{s3_bucket}/nothing-here", cache_dir=tmp_path, cache_limit=10**6)


def test_a_cache_too_small_for_what_the_ranks_read_at_once_is_refused(s3_window_shards, window_shards, tmp_path):
    """Windows of one shard (5 samples), batches of 8 and one worker: the two micro-batches that ranks may read at once
    and the two tasks the worker has in flight, 32 samples, span up to 8 windows, more than the 3 shards the limit
    holds; 12 shards would do (windows of 4)."""
    largest = max(shard["bytes"] for shard in train_shards(window_shards))
    with pytest.raises(NoRoom, match=f"--cache-limit {3 * largest:,} bytes is less than the {8 * largest:,} bytes "
                                         "of shards that the ranks of a node may be reading at once .*; give at least "
                                         f"{12 * largest:,}"):
        make(s3_window_shards, batch_size=8, crop_size=224, val_size=256, cache_dir=tmp_path, cache_limit=3 * largest)


# The rules are DataOptions.validate's, one for a program and the trainer's flags: messages name the flags.
@pytest.mark.parametrize("keywords, message", [
    (dict(order="random"), "^pipeline: --shuffle must be one of global, shard-window, got 'random'$"),
    (dict(order="shard-window", window=0), "^pipeline: --shuffle-window 0: must be at least 1, not 0$"),
    (dict(window=2), "^pipeline: --shuffle-window 2 applies to --shuffle shard-window, not --shuffle global$"),
    (dict(cache_limit=-1), "^pipeline: --cache-limit -1: expected a size such as 20GB, 512MiB or a number of "
                           "bytes, got '-1'$"),
    (dict(cache_dir="/tmp/cache"), "^pipeline: --cache-dir /tmp/cache applies to a URL"),
])
def test_the_order_and_cache_options_are_checked_with_a_local_path(window_shards, keywords, message):
    with pytest.raises(ValueError, match=message):
        make(window_shards, **keywords)


@pytest.mark.parametrize("keywords, message", [
    (dict(), "--cache-limit is required for s3://"),
    (dict(order="global", cache_limit=10**6), "--shuffle global needs every shard at hand"),
])
def test_a_url_needs_a_cache_limit_and_the_shard_window_order(keywords, message):
    with pytest.raises(ValueError, match=message):
        make("s3://bucket/shards", **keywords)


def test_a_local_shard_window_order_takes_its_window_from_the_cache_limit_or_every_shard(window_shards):
    largest = max(shard["bytes"] for shard in train_shards(window_shards))
    assert make(window_shards, order="shard-window", cache_limit=9 * largest).window == 3
    assert make(window_shards, order="shard-window").window == len(train_shards(window_shards))
    assert make(window_shards, order="shard-window", window=4).window == 4
    assert make(window_shards).window is None
    assert make(window_shards, "val", order="shard-window").window is None  # validation keeps its stored order
