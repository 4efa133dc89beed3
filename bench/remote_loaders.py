"""`bench loaders --remote`: a URL's data read through the node-local cache against the same data on local disk, in
the same process, alternating over rounds; with the cost of fetching it alone and the node's download rate
(bench.downloads). The URL is --data-path's, read beside a local copy fetched first, or else the loopback S3 server's,
the data uploaded to it with prep's uploader."""
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

import pipeline
from bench import downloads, results
from bench.data import remote_shards
from bench.loader_timing import time_epoch
from bench.peak_bytes import DirectoryBytes
from bench.remote_table import format_remote, print_fetch_cost, print_remote_table, summarise_remote
from common import store
from common.digest import file_digest
from common.layout import MANIFEST, read_manifest
from prep.remote import upload

REMOTE_CACHE_SHARE = 0.3  # the cache limit, a share of the train shards' bytes
LOOPBACK = "s3:// on moto's server, 127.0.0.1"
REMOTE_EPOCHS = 2  # a round: the first epoch from a cold cache, the next from what it kept


def run(args):
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.data_path and store.is_url(args.data_path):
            url, where = args.data_path, args.data_path
            data_path = local_copy(url, scratch / "local")
        else:
            from bench.loopback import make_bucket, s3_server

            stack.enter_context(s3_server())
            data_path = args.data_path or remote_shards()
            url, where = store.join(make_bucket("bench"), "shards"), LOOPBACK
            upload(data_path, url)
        return measure(args, url, where, data_path, scratch)


def measure(args, url, where, data_path, scratch):
    train = read_manifest(data_path)["splits"]["train"]
    data_bytes = sum(shard["bytes"] for shard in train["shards"])
    limit = int(REMOTE_CACHE_SHARE * data_bytes)
    fetch = fetch_cost(url, train, scratch / "fetch")
    node = downloads.measure(url, train, scratch / "downloads", args.rounds)
    runs = {name: [] for name in args.backends}
    for round_number in range(args.rounds):
        for name in runs:
            cache_dir = scratch / f"cache-{round_number}-{name}"
            runs[name].append(time_remote_round(name, data_path, url, limit, cache_dir, args))
            print(f"round {round_number + 1}/{args.rounds} {name:>9}: "
                  f"{format_remote(runs[name][-1], data_bytes, limit)}", flush=True)
    table = {name: summarise_remote(rounds, data_bytes, limit) for name, rounds in runs.items()}
    print_remote_table(table, args, train, data_bytes, limit, where)
    print_fetch_cost(fetch, table, train)
    downloads.print_table(node, train, where, args.rounds)
    path = results.save("loaders-remote", out_dir=args.results, payload={
        "data_path": str(data_path), "url": where, "train_images": train["samples"],
        "train_shards": len(train["shards"]), "data_bytes": data_bytes, "cache_limit": limit,
        "batch_size": args.batch_size, "workers": args.workers, "rounds": args.rounds, "epochs": REMOTE_EPOCHS,
        "crop_size": 224, "loaders": table, "fetch_alone": fetch, "node_downloads": node})
    print(f"saved {path}")
    return 0


def local_copy(url, folder):
    """The prep output at `url` fetched into `folder`, manifest last: the local-disk side of the comparison."""
    folder.mkdir()
    manifest = store.read_text(store.join(url, MANIFEST))
    for split in json.loads(manifest)["splits"].values():
        for shard in split["shards"]:
            for name in (shard["name"], shard["index"]):
                store.download(store.join(url, name), folder / name)
    (folder / MANIFEST).write_text(manifest)
    return folder


def time_remote_round(name, data_path, url, limit, cache_dir, args):
    """A fresh local loader and a fresh remote one (an empty cache), the same shard-window order; per epoch,
    alternately, each one's images/s after the epoch's first window, and the remote's bytes downloaded; the peak
    bytes of the cache directory over the round."""
    def make(path, **settings):
        options = pipeline.DataOptions(loader=name, batch_size=args.batch_size, workers=args.workers,
                                       cache_limit=limit, **settings)
        return pipeline.make_loader(path, "train", options)

    local, remote = make(data_path, order="shard-window"), make(url, cache_dir=cache_dir)
    largest = max(shard["samples"] for shard in read_manifest(data_path)["splits"]["train"]["shards"])
    skip = math.ceil(remote.window * largest / args.batch_size)
    run = {"local_images_per_s": [], "remote_images_per_s": [], "downloaded_bytes": [], "window": remote.window}
    with DirectoryBytes(cache_dir / "shards") as held:
        for epoch in range(REMOTE_EPOCHS):
            run["local_images_per_s"].append(time_epoch(local, epoch, skip))
            before = remote.cache.stats.downloaded_bytes
            run["remote_images_per_s"].append(time_epoch(remote, epoch, skip))
            run["downloaded_bytes"].append(remote.cache.stats.downloaded_bytes - before)
    run["peak_cache_bytes"] = held.peak
    run["peak_reserved_bytes"] = remote.cache.stats.peak_bytes
    return run


def fetch_cost(url, train, folder):
    """Every train shard fetched once and checked against its sha256, alone: wall seconds, and the CPU seconds this
    process spent downloading and hashing (what the cache's fetches take from the cores that decode)."""
    folder.mkdir()
    began, cpu = time.perf_counter(), downloads.cpu_seconds()
    for shard in train["shards"]:
        store.download(store.join(url, shard["name"]), folder / shard["name"])
    downloaded, cpu_downloading = time.perf_counter(), downloads.cpu_seconds() - cpu
    for shard in train["shards"]:
        if file_digest(folder / shard["name"]) != shard["sha256"]:  # as the cache checks a copy
            raise SystemExit(f"bench: {url}/{shard['name']} came back changed")
    return {"seconds": time.perf_counter() - began, "download_seconds": downloaded - began,
            "download_cpu_s": cpu_downloading, "hash_cpu_s": downloads.cpu_seconds() - cpu - cpu_downloading}
