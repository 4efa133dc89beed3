"""What `bench loaders --remote` reports of its rounds: the remote/local ratios per epoch, their medians, the lines
it prints per round, its table and the cost of fetching the data alone."""
import os
import statistics


def remote_ratios(run, data_bytes, limit):
    return {"speed_ratio": [remote / local for remote, local in zip(run["remote_images_per_s"],
                                                                      run["local_images_per_s"])],
            "downloaded_ratio": [nbytes / data_bytes for nbytes in run["downloaded_bytes"]],
            "peak_cache_ratio": run["peak_cache_bytes"] / limit}


def format_remote(run, data_bytes, limit):
    ratios = remote_ratios(run, data_bytes, limit)
    epochs = ", ".join(f"epoch {epoch}: local {local:.0f} img/s, remote {remote:.0f} ({ratio:.2f}x), downloaded "
                       f"{downloaded:.2f}x the data" for epoch, (local, remote, ratio, downloaded) in enumerate(zip(
                           run["local_images_per_s"], run["remote_images_per_s"], ratios["speed_ratio"],
                           ratios["downloaded_ratio"])))
    return f"{epochs}; peak cache {ratios['peak_cache_ratio']:.2f}x the limit"


def summarise_remote(rounds, data_bytes, limit):
    """Per epoch the medians over rounds of local and remote img/s, their ratio and the bytes downloaded over the
    data's; the peak cache over the limit, the most of any round."""
    ratios = [remote_ratios(run, data_bytes, limit) for run in rounds]

    def median(key, epoch, of=rounds):
        return statistics.median(run[key][epoch] for run in of)

    epochs = [{"local_images_per_s": median("local_images_per_s", epoch),
               "remote_images_per_s": median("remote_images_per_s", epoch),
               "speed_ratio": median("speed_ratio", epoch, ratios),
               "downloaded_ratio": median("downloaded_ratio", epoch, ratios)}
              for epoch in range(len(rounds[0]["local_images_per_s"]))]
    return {"window": rounds[0]["window"], "epochs": epochs,
            "peak_cache_ratio": max(ratio["peak_cache_ratio"] for ratio in ratios),
            "peak_reserved_ratio": max(run["peak_reserved_bytes"] for run in rounds) / limit,
            "rounds": rounds}


def print_remote_table(table, args, train, data_bytes, limit, where):
    first = next(iter(table.values()))
    print(f"\n{where} through the node-local cache vs local disk, the same shard-window order: "
          f"{train['samples']} train images in {len(train['shards'])} shards, {data_bytes / 1e6:.0f} MB; cache limit "
          f"{limit / 1e6:.0f} MB ({limit / data_bytes:.0%}), windows of {first['window']} shards; batch "
          f"{args.batch_size}, {args.workers} workers, {args.rounds} rounds (medians); img/s after each epoch's first "
          "window")
    print(f"{'loader':>10} {'epoch':>6} {'local img/s':>12} {'remote img/s':>13} {'remote/local':>13} "
          f"{'downloaded':>11} {'peak cache':>11}")
    for name, row in table.items():
        for epoch, figures in enumerate(row["epochs"]):
            peak = f"{row['peak_cache_ratio']:10.2f}x" if epoch == 0 else ""
            print(f"{name:>10} {epoch:>6} {figures['local_images_per_s']:12.0f} {figures['remote_images_per_s']:13.0f} "
                  f"{figures['speed_ratio']:12.2f}x {figures['downloaded_ratio']:10.2f}x {peak}")
    print("remote/local: remote / local img/s after the epoch's first window (target >= 0.9); downloaded: bytes "
          "downloaded in the epoch / the data's (target <= 1.1); peak cache: the most bytes its directory held / the "
          "limit (<= 1.0)")
    print("remote/local img/s after the first window: " + "; ".join(
        f"{name} " + ", ".join(f"{figures['speed_ratio']:.2f}x" for figures in row["epochs"]) for name, row in
        table.items()) + f" (epochs {', '.join(map(str, range(len(first['epochs']))))}; target >= 0.9)")


def print_fetch_cost(fetch, table, train):
    cores = len(os.sched_getaffinity(0))
    cost = fetch["download_cpu_s"] + fetch["hash_cpu_s"]
    print(f"fetching the {len(train['shards'])} train shards once, alone: {fetch['seconds']:.2f} s; this process's "
          f"CPU: {fetch['download_cpu_s']:.2f} s downloading + {fetch['hash_cpu_s']:.2f} s checking sha256 (the "
          "server's own CPU besides)")
    for name, row in table.items():
        epoch_s = train["samples"] / row["epochs"][0]["local_images_per_s"]
        print(f"{name:>10}: a local epoch is {epoch_s:.2f} s x {cores} cores = {epoch_s * cores:.1f} core-s; "
              f"fetching it takes {cost / (epoch_s * cores):.0%} of them")
