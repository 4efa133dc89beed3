"""What a backend reads: the split, its reader, its classes and the order resolved against the data; for a URL,
the node-local shard cache and, per pass, the batches handed out only once their shards are in it.

Gating the batches here, in the process that plans the pass, rather than in the readers means a reader never waits:
the `cpu` backend's forked workers and DALI's external source get a batch only once its shards are local and pinned,
and a download that keeps failing stops the pass in this process, with its own error, instead of leaving a worker
waiting for a file that will not come.
"""
import math
from dataclasses import dataclass, replace

import numpy as np

from common import store
from common.errors import BadManifest, DataTimeout, NoRoom
from pipeline import dataset, sampling
from pipeline.cache import Copy, ShardCache, copy_name, default_dir
from pipeline.prefetch import Prefetch
from pipeline.readers import open_reader


@dataclass
class Reading:
    reader: object
    num_classes: int
    options: object          # pipeline.options.LoaderOptions with `windows` resolved
    window: int | None       # shards per window of a shard-window train order, else None
    cache: ShardCache | None
    copies: list | None      # per shard, its cache.Copy (a URL's)
    _pass: object = None

    @property
    def samples(self):
        return len(self.reader)

    def start_pass(self, epoch, start=0):
        """This rank's batches of `epoch` from `start` (sampling.pass_batches), each handed out once its shards are
        in the cache; the previous pass is closed."""
        self.close_pass()
        o = self.options
        if self.cache is None:
            self._pass = Pass(sampling.pass_batches(self.samples, o, epoch, start))
        else:
            node = sampling.ranks_batches(self.samples, o, epoch, start, ranks=o.node_ranks)
            tar_id = self.reader.table.tar_id
            steps = node_steps(node, tar_id)
            own = node[o.node_ranks.index(o.rank)]
            prefetch = Prefetch(self.cache, self.copies, steps, timeout=o.data_timeout, rank=o.rank,
                                local_rank=o.node_ranks.index(o.rank), local_ranks=len(o.node_ranks))
            self._pass = CachedPass(own, tar_id, prefetch)
        return self._pass

    def close_pass(self):
        if self._pass is not None:
            self._pass.close()


class Pass:
    """A pass's batches; with local data there is nothing to wait for."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def consumed(self, step):
        """This rank has read its batches up to `step`."""

    def close(self):
        """The pass is over (or left): what it holds goes."""


class CachedPass(Pass):
    def __init__(self, batches, tar_id, prefetch):
        super().__init__(batches)
        self.tar_id = tar_id
        self.prefetch = prefetch

    def __iter__(self):
        for batch in self.batches:
            self.prefetch.wait(np.unique(self.tar_id[batch]))
            yield batch

    def consumed(self, step):
        self.prefetch.consumed(step)

    def close(self):
        self.prefetch.close()


def node_steps(node_batches, tar_id):
    """Per step, the shards the node's ranks read in it (the ranks' batches: a list per rank)."""
    steps = max(len(batches) for batches in node_batches)
    return [np.unique(np.concatenate([tar_id[batches[step]] for batches in node_batches if step < len(batches)]))
            for step in range(steps)]


def open_reading(data_path, options, held=0):
    """The Reading of `options.split` of `data_path` (a path or a URL); `held`: how many batches the backend keeps
    reading from (their shards pinned) after it has read the next ones."""
    if not store.is_url(data_path):
        data = dataset.open_dataset(data_path)
        split = data.split(options.split)
        options, window = _resolve_order(split, options)
        return Reading(open_reader(split), len(data.classes), options, window, None, None)
    url = str(data_path).rstrip("/")
    cache = ShardCache(options.cache_dir or default_dir(url), options.cache_limit)
    try:
        data, split = store.within(options.data_timeout, f"the manifest and indexes of {url}",
                                   lambda: _open_remote(url, options.split, cache))
    except DataTimeout as error:
        raise DataTimeout(f"rank {options.rank}: {error}") from None
    options, window = _resolve_order(split, options)
    copies = [_copy(shard) for shard in split.shards]
    cache.know(copies)
    cache.check = _arrival_check(split, copies)
    reader = open_reader(split, copies=[cache.path(copy) for copy in copies])
    _check_fits(split, options, cache.limit, held)
    return Reading(reader, len(data.classes), options, window, cache, copies)


def _open_remote(url, split_name, cache):
    """(dataset, split) of a URL, with every index of the split copied into the cache (all at once: the first rank
    of a node fetches them all, ImageNet has 1,000 or so)."""
    data = dataset.open_dataset(url, index_copy=lambda shard: _index_copy(cache, shard)[0])
    split = data.split(split_name)
    _index_copy(cache, *split.shards)
    return data, split


def _resolve_order(split, options):
    """(options with `shard_order` set, the window in shards): shard-window's W is as asked, else what the cache limit
    holds three times over (the window being read, the next one arriving, the one a slower local rank may still
    read), else all shards; validation keeps its stored order."""
    if options.order == "global" or not options.train:
        return options, None
    if not isinstance(split, dataset.ShardSplit):
        raise ValueError("pipeline: order='shard-window' needs shards; this data path is a folder layout")
    shards = split.shards
    window = options.window or (_window_for(options.cache_limit, shards) if options.cache_limit else len(shards))
    window = min(window, len(shards))
    windows = sampling.ShardWindows(tuple(shard.samples for shard in shards), window)
    return replace(options, shard_order=windows), window


def _window_for(limit, shards):
    return max(1, limit // (3 * max(shard.bytes for shard in shards)))


def _check_fits(split, options, limit, held):
    """NoRoom naming cache_limit unless the shards that the node's ranks may be reading at once fit in it: those
    of `accumulate` + 1 + `held` consecutive steps (a rank may be `accumulate` micro-batches ahead of another)."""
    steps = options.accumulate + 1 + held
    if options.train:
        reading = steps * options.batch_size * options.world  # consecutive samples of the order
        need = _train_need(split.shards, options.shard_order, reading)
        least = _least_limit(split.shards, options, reading)
    else:
        node = node_steps(sampling.ranks_batches(len(split.table), options, 0, ranks=options.node_ranks),
                          split.table.tar_id)
        sizes = np.array([shard.bytes for shard in split.shards])
        need = least = max((sizes[np.unique(np.concatenate(node[max(0, k - steps + 1):k + 1]))].sum()
                            for k in range(len(node))), default=0)
    if need > limit:
        raise NoRoom(f"pipeline: --cache-limit {limit:,} bytes is less than the {need:,} bytes of shards that the "
                         f"ranks of a node may be reading at once (batch {options.batch_size}, world size "
                         f"{options.world}, accumulate {options.accumulate}); give at least {least:,}")


def _train_need(shards, windows, reading):
    """Bytes of the shards of the windows that `reading` consecutive samples of the order may span."""
    smallest = sum(sorted(windows.shard_samples)[:windows.window])
    spanned = min(math.ceil(reading / smallest) + 1, math.ceil(len(shards) / windows.window))
    return spanned * windows.window * max(shard.bytes for shard in shards)


def _least_limit(shards, options, reading):
    """The smallest cache limit that holds what `reading` samples span: with the window asked for, or else with
    the window that limit gives."""
    if options.window:
        return _train_need(shards, options.shard_order, reading)
    largest = max(shard.bytes for shard in shards)
    for window in range(1, len(shards) + 1):
        least = max(3 * window * largest, _train_need(shards, replace(options.shard_order, window=window), reading))
        if least < 3 * (window + 1) * largest:  # a limit this large still gives this window
            return least
    return 3 * len(shards) * largest


def _copy(shard):
    if not shard.sha256:
        raise BadManifest(f"{shard.tar} has no sha256 in the manifest; a URL's shards are checked against it")
    return Copy(str(shard.tar), copy_name(str(shard.tar).rsplit("/", 1)[1], shard.sha256), shard.bytes, shard.sha256)


def _index_copy(cache, *shards):
    return cache.index_copies([(str(shard.index), copy_name(str(shard.index).rsplit("/", 1)[1], shard.sha256))
                               for shard in shards])


def _arrival_check(split, copies):
    """check(copy, path) for the cache: the tar that arrived is the one its index describes."""
    shards = {copy.name: shard for copy, shard in zip(copies, split.shards)}

    def check(copy, path):
        shard = shards[copy.name]
        dataset.check_copy(shard, split.local_index(shard), path)

    return check
