"""One pass's shards brought into the node-local cache (pipeline.cache) ahead of need, and let go behind it.

The plan is the pass as this node reads it: per step, the shards of the batches of every rank on the node. Every rank
of the node plans the same steps (the order depends on the data and (seed, epoch) alone), so all claim the shards in
the same order, that of first use: whichever claims a shard first downloads it, the others pin it once it is there.
One thread claims, in that order and as far as the limit allows; a small pool downloads. A shard stays pinned until
this rank has read every step that uses it (consumed).

Why strictly in the order of first use: the room the cache has then always goes to the shard needed soonest, on
every rank, so the batches being read get their shards first, and as long as the shards of a few consecutive steps
fit within the limit (pipeline.source checks that), no rank waits for room another rank holds for later steps.
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

from pipeline.cache import RESERVED, close_lock

DOWNLOADS = 4   # in flight per process
POLL_S = 0.02
CLAIM_RETRY_S = 0.05


class Prefetch:
    def __init__(self, cache, copies, steps, downloads=DOWNLOADS):
        """`copies`: per shard number, its cache.Copy; `steps`: per step, the shard numbers the node reads in it."""
        self._cache = cache
        self._copies = copies
        self._first, self._last = {}, {}
        for step, shards in enumerate(steps):
            for shard in shards.tolist():
                self._first.setdefault(shard, step)
                self._last[shard] = step
        self._uses = {copies[shard].name: (self._first[shard], self._last[shard]) for shard in self._first}
        self._ready = {shard: threading.Event() for shard in self._first}
        self._locks = {}    # shard -> its lock descriptor: exclusive while downloading, shared while pinned
        self._writing = {}  # shard -> its download's future
        self._consumed = -1
        self._error = None
        self._closed = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(downloads, thread_name_prefix="shard-download")
        self._claims = threading.Thread(target=self._claim_all, name="shard-claims", daemon=True)
        self._claims.start()

    def wait(self, shards):
        """Return once each of `shards` is in the cache and pinned; raise what stopped the prefetch instead."""
        for shard in shards:
            while not self._ready[shard].wait(POLL_S):
                if self._error is not None:
                    raise self._error

    def consumed(self, step):
        """This rank has read every sample of the steps up to `step`: a shard used no later can go."""
        with self._mutex:
            self._consumed = step
            for shard in [s for s in self._locks if s not in self._writing and self._last[s] <= step]:
                close_lock(self._locks.pop(shard))

    def close(self):
        """Stop claiming, give back what is reserved but not downloading yet, unpin everything; a download in
        flight lets its shard go when it ends."""
        self._stop.set()
        self._claims.join()
        with self._mutex:
            self._closed = True
            for shard, future in list(self._writing.items()):
                if future.cancel():
                    self._cache.abandon(self._copies[shard], self._locks[shard])
                    del self._writing[shard]
            for shard in [s for s in self._locks if s not in self._writing]:
                close_lock(self._locks.pop(shard))
        self._pool.shutdown(wait=False)

    def _claim_all(self):
        try:
            for shard in sorted(self._first, key=lambda s: (self._first[s], s)):
                if self._last[shard] <= self._consumed:
                    continue  # another local rank's, and this rank is past it
                if not self._claim(shard):
                    return
        except Exception as error:  # an I/O error on the cache directory: the pass cannot go on
            self._fail(error)

    def _claim(self, shard):
        """Claim `shard` (cache.claim) once it can be, unless the pass stops first; whether it was."""
        copy = self._copies[shard]
        lock = self._cache.lock_file(copy)
        found = None
        try:
            while found is None and not self._stop.is_set():
                found = self._cache.claim(copy, lock, self._eviction_order)
                if found is None:
                    self._stop.wait(CLAIM_RETRY_S)
        finally:
            if found is None:
                close_lock(lock)
        if found is None:
            return False
        with self._mutex:
            self._locks[shard] = lock
            if found == RESERVED:
                self._writing[shard] = self._pool.submit(self._download, shard)
            else:
                self._ready[shard].set()
        return True

    def _download(self, shard):
        copy, lock = self._copies[shard], self._locks[shard]
        try:
            self._cache.fetch(copy)
        except BaseException as error:
            with self._mutex:
                self._cache.abandon(copy, lock)
                close_lock(self._locks.pop(shard))
                del self._writing[shard]
            self._fail(error)
            return
        self._cache.publish(copy, lock)
        with self._mutex:
            del self._writing[shard]
            if self._closed or self._last[shard] <= self._consumed:
                close_lock(self._locks.pop(shard))
            else:
                self._ready[shard].set()

    def _fail(self, error):
        if self._error is None:
            self._error = error
        self._stop.set()

    def _eviction_order(self, names):
        """Copies this pass needs no more first, then those it needs last."""
        def next_use(name):
            first, last = self._uses.get(name, (math.inf, -1))
            return first if last > self._consumed else math.inf

        return sorted(names, key=next_use, reverse=True)
