"""Training data at a URL, read through the node-local shard cache by every decoding backend: s3:// on moto's
S3 server and http:// on a loopback server with Range requests, both real servers on 127.0.0.1 (conftest.py).

Each URL gives, epoch after epoch, the same samples in the same order as the same shard-window order read from
local disk, labels with their images, with a cache limited to 30 % of the data that never holds more; and a server
that fails 30 % of its requests still gives a whole epoch. The data: conftest's window_shards, colour-coded images
(image n shows colour n, bench.colours) in 20 train shards of 5.
"""
import numpy as np
import pytest

import pipeline
from bench.colours import identify, sample_class
from common.layout import read_manifest

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

DECODING = ["cpu", pytest.param("dali-cpu", marks=pytest.mark.skipif(not HAVE_DALI, reason="no nvidia-dali"))]
CROP, VAL_SIZE = 32, 36
BATCH = 2  # so that what the ranks read at once spans few windows of 2 shards (10 samples)
LIMIT_SHARE = 0.3


def cache_limit(shards):
    """30 % of the bytes of the train shards: windows of 2 shards (the limit holds 3 x 2 of the 20 shards)."""
    return int(LIMIT_SHARE * sum(shard["bytes"] for shard in read_manifest(shards)["splits"]["train"]["shards"]))


def samples(shards, split):
    """The sample numbers (= colour ids) of `split`: train first, then val."""
    counts = {name: read_manifest(shards)["splits"][name]["samples"] for name in ("train", "val")}
    return list(range(counts["train"])) if split == "train" else list(range(counts["train"], sum(counts.values())))


def make(data, split, backend, **settings):
    options = pipeline.DataOptions(**{"loader": backend, "batch_size": BATCH, "crop_size": CROP,
                                      "val_size": VAL_SIZE, "workers": 2, **settings})
    return pipeline.make_loader(data, split, options, device="cpu")


def read_epoch(loader, epoch=0, start=0):
    loader.set_epoch(epoch, start)
    ids, labels = [], []
    for images, batch_labels in loader:
        ids.extend(identify(images))
        labels.extend(batch_labels.tolist())
    return np.array(ids), np.array(labels)


@pytest.fixture
def url_of(request):
    """url_of("s3" | "http") -> the window shards at that store (the HTTP server without faults)."""
    def url(store):
        if store == "http":
            request.getfixturevalue("http_store")
        return request.getfixturevalue(f"{store}_window_shards")
    return url


@pytest.mark.parametrize("backend", DECODING)
@pytest.mark.parametrize("store", ["s3", "http"])
def test_a_url_reads_the_epochs_the_same_order_reads_from_local_disk(url_of, window_shards, store, backend,
                                                                      cache_watch, tmp_path):
    url, limit, cache_dir = url_of(store), cache_limit(window_shards), tmp_path / "cache"
    remote = make(url, "train", backend, cache_dir=cache_dir, cache_limit=limit)
    local = make(window_shards, "train", backend, order="shard-window", cache_limit=limit)
    assert remote.window == local.window == 2
    with cache_watch(cache_dir) as size:
        for epoch in (0, 1):
            ids, labels = read_epoch(remote, epoch)
            assert np.array_equal(ids, read_epoch(local, epoch)[0])
            assert sorted(ids) == samples(window_shards, "train")
            assert np.array_equal(labels, sample_class(ids))
        val_ids, val_labels = read_epoch(make(url, "val", backend, cache_dir=cache_dir, cache_limit=limit))
    assert sorted(val_ids) == samples(window_shards, "val")
    assert np.array_equal(val_labels, sample_class(val_ids))
    assert size.samples > 100 and 0 < size.peak <= limit
    assert remote.cache.stats.peak_bytes <= limit
    # Each shard once in the first epoch; the second finds a few still there from the end of the first.
    assert 20 < remote.cache.stats.downloads < 40


def test_a_server_failing_30_percent_of_requests_still_gives_a_whole_epoch(http_store, http_window_shards,
                                                                         window_shards, tmp_path):
    http_store.fail_share = 0.3
    limit = cache_limit(window_shards)
    ids, labels = read_epoch(make(http_window_shards, "train", "cpu", cache_dir=tmp_path, cache_limit=limit))
    assert np.array_equal(ids, read_epoch(make(window_shards, "train", "cpu", order="shard-window",
                                               cache_limit=limit))[0])
    assert np.array_equal(labels, sample_class(ids))
    failed = sum(status == 503 for _, _, status in http_store.requests)
    assert 0.2 < failed / len(http_store.requests) < 0.4


def test_a_resumed_pass_from_a_url_starts_where_it_resumes(s3_window_shards, window_shards, tmp_path):
    limit, start = cache_limit(window_shards), 37
    ids, _ = read_epoch(make(s3_window_shards, "train", "cpu", cache_dir=tmp_path, cache_limit=limit), 3, start)
    unbroken, _ = read_epoch(make(window_shards, "train", "cpu", order="shard-window", cache_limit=limit), 3)
    assert len(ids) == (len(unbroken) - start) // BATCH * BATCH
    assert np.array_equal(ids, unbroken[start:start + len(ids)])


def test_the_synthetic_backend_takes_its_sizes_from_a_urls_manifest(s3_window_shards, window_shards):
    loader = make(s3_window_shards, "train", "synthetic")
    assert len(loader) == len(samples(window_shards, "train")) // BATCH
    assert loader.window is None and loader.cache is None


def test_bench_loaders_remote_measures_a_url_beside_a_local_copy_of_it(http_store, http_window_shards, tmp_path,
                                                                          capsys):
    import json

    from bench import loaders

    assert loaders.main(["--remote", "--data-path", http_window_shards, "--backends", "cpu", "--rounds", "1",
                         "--batch-size", "4", "--workers", "1", "--results", str(tmp_path)]) == 0
    saved = json.loads(next(tmp_path.glob("loaders-remote-*.json")).read_text())
    cold = saved["loaders"]["cpu"]["epochs"][0]
    assert saved["url"] == http_window_shards and saved["train_shards"] == 20
    assert cold["downloaded_ratio"] == pytest.approx(1.0) and cold["remote_images_per_s"] > 0
    assert 0 < saved["loaders"]["cpu"]["peak_cache_ratio"] <= 1.0
    assert f"{http_window_shards} through the node-local cache" in capsys.readouterr().out


def test_bench_loaders_takes_a_url_only_with_remote(http_window_shards, capsys):
    from bench import loaders

    with pytest.raises(SystemExit) as exit_:
        loaders.main(["--data-path", http_window_shards])
    assert exit_.value.code == 2
    assert f"--data-path {http_window_shards} is a URL: it is measured with --remote" in capsys.readouterr().err
