"""One pass's shards brought into the node-local cache (pipeline.cache) ahead of need, and let go behind it.

The plan is the pass as this node reads it: per step, the shards of the batches of every rank on the node. Every rank
of the node plans the same steps (the order depends on the data and (seed, epoch) alone), so all claim the shards in
the same order, that of first use. The downloads are spread over the node's ranks: the shard at place p of that
order is local rank p % L's to download; another rank that reaches it first waits for the owner to reserve it (at
most HANDOFF_S, then downloads it itself), moves on while it is written, and pins it once it is there. So a node
runs L x DOWNLOADS downloads at once, each in the process that will hash it, instead of the first rank's DOWNLOADS.

One thread claims, in that order and as far as the limit allows; a few daemon threads download (daemons: a download
stalled in the store cannot keep the process from exiting once its wait has timed out). A shard stays pinned until
this rank has read every step that uses it (consumed).

Why strictly in the order of first use: the room the cache has then always goes to the shard needed soonest, on
every rank, so the batches being read get their shards first, and as long as the shards of the steps in flight fit
within the limit (pipeline.reading checks that), no rank waits for room another rank holds for later steps.

Every wait of the reading thread is bounded: a shard not pinned within the timeout is a DataTimeout naming the
rank, the shard and its URL, what its claim is waiting for, and the cache's bytes against its limit.
"""
import math
import threading
import time

from common.errors import DataTimeout
from pipeline.cache import PRESENT, RESERVED, WRITING, close_lock

DOWNLOADS = 4   # in flight per process
POLL_S = 0.02
CLAIM_RETRY_S = 0.05
HANDOFF_S = 2.0  # how long a shard waits for its owner to start it before another local rank does


class Prefetch:
    def __init__(self, cache, copies, steps, *, timeout, rank=0, local_rank=0, local_ranks=1, downloads=DOWNLOADS):
        """`copies`: per shard number, its cache.Copy; `steps`: per step, the shard numbers the node reads in it;
        `local_rank` of `local_ranks`: this process's place among the node's ranks, which share the downloads."""
        self._cache = cache
        self._copies = copies
        self._timeout = timeout
        self._rank = rank
        self._first, self._last = {}, {}
        for step, shards in enumerate(steps):
            for shard in shards.tolist():
                self._first.setdefault(shard, step)
                self._last[shard] = step
        self._order = sorted(self._first, key=lambda s: (self._first[s], s))
        self._own = {shard for place, shard in enumerate(self._order) if place % local_ranks == local_rank}
        self._uses = {copies[shard].name: (self._first[shard], self._last[shard]) for shard in self._first}
        self._ready = {shard: threading.Event() for shard in self._first}
        self._locks = {}    # shard -> its lock descriptor: exclusive while downloading, shared while pinned
        self._writing = {}  # shard -> when its download was queued
        self._others = {}   # shard -> its lock descriptor, while another process writes it
        self._claiming = None  # (shard, what its claim waits for), while the claim thread waits
        self._consumed = -1
        self._error = None
        self._closed = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.Semaphore(downloads)
        self._claims = threading.Thread(target=self._claim_all, name="shard-claims", daemon=True)
        self._claims.start()

    def wait(self, shards):
        """Return once each of `shards` is in the cache and pinned; raise what stopped the prefetch instead, or a
        DataTimeout once the pass's timeout has gone by."""
        deadline = time.monotonic() + self._timeout
        for shard in shards:
            while not self._ready[shard].wait(POLL_S):
                if self._error is not None:
                    raise self._error
                if time.monotonic() > deadline:
                    raise DataTimeout(self._late(shard))

    def consumed(self, step):
        """This rank has read every sample of the steps up to `step`: a shard used no later can go."""
        with self._mutex:
            self._consumed = step
            for shard in [s for s in self._locks if s not in self._writing and self._last[s] <= step]:
                close_lock(self._locks.pop(shard))

    def close(self):
        """Stop claiming, unpin everything; a download queued but not started gives its reservation back, one in
        flight lets its shard go when it ends."""
        self._stop.set()
        self._claims.join()
        with self._mutex:
            self._closed = True
            for shard in [s for s in self._locks if s not in self._writing]:
                close_lock(self._locks.pop(shard))
            for lock in self._others.values():
                close_lock(lock)
            self._others.clear()

    def _claim_all(self):
        try:
            for shard in self._order:
                if self._last[shard] <= self._consumed:
                    continue  # another local rank's, and this rank is past it
                if not self._claim(shard):
                    return
            while self._others and not self._stop.is_set():
                self._pin_written()
                self._stop.wait(CLAIM_RETRY_S)
        except Exception as error:  # an I/O error on the cache directory: the pass cannot go on
            self._fail(error)

    def _claim(self, shard):
        """Claim `shard` (cache.claim) once it can be, unless the pass stops first; whether it was. Only this
        rank's own shards are reserved at once; another rank's wait HANDOFF_S for it to start them."""
        copy = self._copies[shard]
        lock = self._cache.lock_file(copy)
        since = time.monotonic()
        found = None
        try:
            while found is None and not self._stop.is_set():
                self._pin_written()
                reserve = shard in self._own or time.monotonic() - since > HANDOFF_S
                found = self._cache.claim(copy, lock, self._eviction_order, reserve=reserve)
                if found is None:
                    self._claiming = (shard, "room in the cache" if reserve else "its owner to start it")
                    self._stop.wait(CLAIM_RETRY_S)
        finally:
            self._claiming = None
            if found is None:
                close_lock(lock)
        if found is not None:
            self._claimed(shard, lock, found)
        return found is not None

    def _pin_written(self):
        """Pin the shards other processes were writing that are there now (or write one whose writer gave up)."""
        for shard, lock in list(self._others.items()):
            if self._last[shard] <= self._consumed:
                close_lock(self._others.pop(shard))
                continue
            found = self._cache.claim(self._copies[shard], lock, self._eviction_order)
            if found in (PRESENT, RESERVED):
                del self._others[shard]
                self._claimed(shard, lock, found)

    def _claimed(self, shard, lock, found):
        with self._mutex:
            if found == WRITING:
                self._others[shard] = lock
                return
            self._locks[shard] = lock
            if found == RESERVED:
                self._writing[shard] = time.monotonic()
                threading.Thread(target=self._download, args=(shard,), name="shard-download", daemon=True).start()
            else:
                self._ready[shard].set()

    def _download(self, shard):
        copy, lock = self._copies[shard], self._locks[shard]
        with self._slots:
            try:
                if self._stop.is_set():
                    raise _Cancelled
                self._cache.fetch(copy)
            except BaseException as error:
                with self._mutex:
                    self._cache.abandon(copy, lock)
                    close_lock(self._locks.pop(shard))
                    del self._writing[shard]
                if not isinstance(error, _Cancelled):
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

    def _late(self, shard):
        """What a DataTimeout says: the rank, the shard and its URL, what it waits for, and the cache's bytes."""
        copy = self._copies[shard]
        claiming = self._claiming
        if shard in self._writing:
            state = f"downloading it for {time.monotonic() - self._writing[shard]:.0f} s (the store answers slowly " \
                    "or not at all)"
        elif shard in self._others:
            state = "another process of this node is downloading it"
        elif claiming and claiming[0] == shard:
            state = f"its claim waits for {claiming[1]}"
        else:
            state = "its claim waits for earlier shards" + (f" ({self._copies[claiming[0]].name}: {claiming[1]})"
                                                            if claiming else "")
        return (f"rank {self._rank}: waited {self._timeout:g} s for shard {copy.url}: {state}; the cache at "
                f"{self._cache.directory} holds {self._cache.held():,} of {self._cache.limit:,} bytes")

    def _eviction_order(self, names):
        """Copies this pass needs no more first, then those it needs last."""
        def next_use(name):
            first, last = self._uses.get(name, (math.inf, -1))
            return first if last > self._consumed else math.inf

        return sorted(names, key=next_use, reverse=True)


class _Cancelled(Exception):
    """A queued download whose pass closed before it started."""
