"""Two gloo ranks of one node train-read s3:// (moto's server on 127.0.0.1) through one shared cache directory limited
to 30 % of the data: equal steps, no sample on both ranks, exactly the local shard-window order split among them,
validation exactly once, each shard downloaded once per epoch by the node, and the cache never over its limit."""
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import pipeline
from bench.colours import identify, sample_class
from common.layout import read_manifest
from pipeline import dataset, sampling
from pipeline.readers import open_reader

CROP, VAL_SIZE, BATCH, WORLD, EPOCHS = 32, 36, 2, 2, 2


def make(data, split, **settings):
    options = pipeline.DataOptions(**{"loader": "cpu", "batch_size": BATCH, "crop_size": CROP,
                                      "val_size": VAL_SIZE, "workers": 1, **settings})
    return pipeline.make_loader(data, split, options, device="cpu")


def read_as_rank(rank, init_file, url, cache_dir, limit, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for split, epochs in (("train", range(EPOCHS)), ("val", [0])):
            loader = make(url, split, cache_dir=cache_dir, cache_limit=limit)
            for epoch in epochs:
                before = loader.cache.stats.downloads
                loader.set_epoch(epoch)
                ids, labels = [], []
                for images, batch_labels in loader:
                    ids.extend(identify(images).tolist())
                    labels.extend(batch_labels.tolist())
                    torch.distributed.barrier()  # the step's all-reduce: ranks go in step, as in training
                results.put(((split, epoch, rank), (len(loader), ids, labels, loader.cache.stats.downloads - before,
                                                    loader.window)))
    finally:
        torch.distributed.destroy_process_group()


def colour_ids(data):
    """The colour id of each train sample number of the shards."""
    reader = open_reader(dataset.open_dataset(data).split("train"))
    return np.array([int(reader.describe(i).rsplit("_", 1)[1].split(".")[0]) for i in range(len(reader))])


@pytest.fixture(scope="module")
def ddp_run(s3_window_shards, window_shards, cache_watch, tmp_path_factory):
    manifest = read_manifest(window_shards)["splits"]
    limit = int(0.3 * sum(shard["bytes"] for shard in manifest["train"]["shards"]))
    cache_dir, init = tmp_path_factory.mktemp("node-cache"), tmp_path_factory.mktemp("init") / "init"
    results = mp.get_context("spawn").SimpleQueue()
    with cache_watch(cache_dir) as size:
        mp.spawn(read_as_rank, args=(init, s3_window_shards, cache_dir, limit, results), nprocs=WORLD)
    got = dict(results.get() for _ in range((EPOCHS + 1) * WORLD))
    return got, manifest, limit, size


def test_two_ranks_from_a_url_read_the_local_order_without_overlap_in_equal_steps(ddp_run, window_shards):
    got, manifest, limit, _ = ddp_run
    steps = manifest["train"]["samples"] // (WORLD * BATCH)
    window = got["train", 0, 0][4]
    local = make(window_shards, "train", order="shard-window", cache_limit=limit)
    assert window == local.window == 2
    ids_of = colour_ids(window_shards)
    for epoch in range(EPOCHS):
        ranks = [got["train", epoch, rank] for rank in range(WORLD)]
        assert [length for length, *_ in ranks] == [steps] * WORLD
        assert all(len(ids) == steps * BATCH for _, ids, *_ in ranks)
        by_step = np.concatenate([np.reshape(ids, (steps, BATCH)) for _, ids, *_ in ranks], axis=1).ravel()
        order = sampling.epoch_order(len(ids_of), seed=0, epoch=epoch, shard_order=local._options.shard_order)
        assert np.array_equal(by_step, ids_of[order[:steps * WORLD * BATCH]])
        for _, ids, labels, *_ in ranks:
            assert labels == [sample_class(n) for n in ids]
    val = [got["val", 0, rank] for rank in range(WORLD)]
    assert sorted(n for _, ids, *_ in val for n in ids) == list(range(manifest["train"]["samples"],
                                                                    manifest["train"]["samples"] +
                                                                    manifest["val"]["samples"]))


def test_the_node_downloads_each_shard_once_and_keeps_its_cache_within_the_limit(ddp_run):
    got, manifest, limit, size = ddp_run
    downloads = {epoch: sum(got["train", epoch, rank][3] for rank in range(WORLD)) for epoch in range(EPOCHS)}
    assert downloads[0] == len(manifest["train"]["shards"])
    assert downloads[1] <= len(manifest["train"]["shards"])  # some may still be there from the first epoch
    assert sum(got["val", 0, rank][3] for rank in range(WORLD)) == len(manifest["val"]["shards"])
    assert size.samples > 100 and 0 < size.peak <= limit
