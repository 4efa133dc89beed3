"""bench.downloads' node of 4 local ranks (spawned processes, one gloo group, torchrun's variables) fetching the
window shards from s3:// (moto's server on 127.0.0.1) into an empty cache: each shard downloaded once per node, and
the downloads spread, every rank taking some."""
from bench import downloads
from common.layout import read_manifest


def test_four_local_ranks_download_each_shard_once_and_share_the_downloads(s3_window_shards, window_shards, tmp_path):
    train = read_manifest(window_shards)["splits"]["train"]
    data_bytes = sum(shard["bytes"] for shard in train["shards"])
    run = downloads.node_download(s3_window_shards, 4, tmp_path / "cache", limit=data_bytes, timeout=60)
    downloads.check_once(run, train, tmp_path / "cache")  # each shard once per node, all of them in the cache
    assert sum(run["downloads"]) == len(train["shards"]) == 20
    assert all(count >= 1 for count in run["downloads"]), run["downloads"]  # spread over the node's ranks
    assert run["seconds"] > 0 and len(run["cpu_s"]) == 4
