"""The shared memory of the `cpu` backend's batch rings, budgeted before it is taken.

torch's share_memory_() keeps a CPU tensor in a POSIX shared-memory object (shm_open, under either sharing strategy),
which Linux puts in the tmpfs at /dev/shm, reserving its pages at once. A container sizes that tmpfs: Docker's default
is 64 MB, and a Kubernetes pod's too unless an emptyDir of medium Memory is mounted there. A ring past it fails deep in
torch ("unable to allocate shared memory(shm) ... No space left on device"), so a loader checks first and refuses in
one line (NoRoom) that says what it needs, what /dev/shm has and what would fit.

The rule. The local ranks of a node run the same configuration, so each builds the same rings in the same order (the
trainer: train, then val). A loader's ring fits when
- (the rings this process holds already + this one) x the node's local ranks <= the size of /dev/shm: the same answer
  on every rank, whenever it runs, so the ranks refuse together rather than one leaving the others waiting in a
  collective; and a val loader built after the train loader counts the train ring that is still there;
- this ring <= what /dev/shm has free now (what other processes, or ranks ahead of this one, hold is gone).
A train loader cannot see the val ring to come: it is judged when the val loader is built.

What a ring needs: its slots of `rows` side x side x 3 images, in whole pages (labels travel through the
DataLoader's pipe, outside shared memory). A GPU's ring is the same memory:
it is page-locked in place (cpu._pin registers the ring's own pages), no copy in shared memory.
"""
import math
import mmap
import os
import sys
import weakref
from dataclasses import dataclass

from common.errors import NoRoom
from common.machine import human_bytes

SHM_DIR = "/dev/shm"  # where glibc's shm_open, and so torch's shared memory, keeps its objects on Linux
_held = {"bytes": 0}  # the bytes of the rings this process holds (hold), until each is freed


@dataclass(frozen=True)
class Ring:
    """A ring's shape: workers x prefetch + spare slots of `rows` images of side x side x 3 elements of `itemsize`
    bytes."""
    rows: int
    side: int
    itemsize: int
    prefetch: int
    spare: int

    def slots(self, workers):
        """The tasks a DataLoader of `workers` keeps in flight, and the batches held after them."""
        return workers * self.prefetch + self.spare

    def need(self, workers):
        """The bytes of shared memory a ring for `workers` takes."""
        return _pages(self.slots(workers) * self.rows * 3 * self.side ** 2 * self.itemsize)


@dataclass(frozen=True)
class Space:
    """The tmpfs shared memory lives in: its path, its size and what is free, in bytes."""
    where: str
    total: int
    free: int


def shm_space(where=SHM_DIR):
    """The Space of `where`; None where there is nothing to budget: not Linux, no such directory, or a tmpfs
    without a size limit (size=0, which statvfs reports as no blocks)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        stats = os.statvfs(where)
    except OSError:
        return None
    if not stats.f_blocks:
        return None
    return Space(where, stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize)


def fits(need, *, local_ranks, space, held=0):
    """Whether a ring of `need` bytes fits beside the `held` bytes this process has already, on every local rank."""
    return (held + need) * local_ranks <= space.total and need <= space.free


def check(ring, workers, *, split, local_ranks, space, held=0):
    """Raise NoRoom unless a ring of shape `ring` for `workers` fits `space` (the rule above), naming the remedies:
    more shared memory, the most workers that fit, the largest batch that fits with `workers`."""
    need = ring.need(workers)
    if fits(need, local_ranks=local_ranks, space=space, held=held):
        return
    node = (held + need) * local_ranks
    earlier = f" on top of the {human_bytes(held)} this process's earlier rings hold" if held else ""
    ranks = f"this node's {local_ranks} ranks" if local_ranks > 1 else "this node's 1 rank"
    # Enough for the node's rings, and for this one beside what is taken now (by other processes too).
    enough = max(node, space.total - space.free + need)
    fewer = next((n for n in range(workers - 1, 0, -1)
                  if fits(ring.need(n), local_ranks=local_ranks, space=space, held=held)), None)
    batch = _largest_batch(ring, workers, local_ranks=local_ranks, space=space, held=held)
    less = ([f"--workers {fewer}"] if fewer else []) + ([f"--batch-size {batch}"] if batch else [])
    workers_named = f"{workers} worker" + ("s" if workers != 1 else "")
    raise NoRoom(f"the cpu loader's {split} batch ring needs {human_bytes(need)} of shared memory per rank{earlier} "
                 f"({ring.slots(workers)} slots of {ring.rows} x 3 x {ring.side} x {ring.side} x {ring.itemsize} "
                 f"bytes for {workers_named}), {human_bytes(node)} for {ranks}, but {space.where} holds "
                 f"{human_bytes(space.total)} ({human_bytes(space.free)} free): give the container more (docker run "
                 f"--shm-size={_docker_size(enough)} or more; Kubernetes: an emptyDir of medium Memory mounted at "
                 "/dev/shm)" + (f", or ask less per rank: {' or '.join(less)}" if less else ""))


def make_room(ring, workers, *, split, local_ranks):
    """check() against /dev/shm as it is now and the rings this process holds (none to check where shm_space has
    no limit). `local_ranks`: the processes on this node (LoaderOptions.node_ranks), each taken to build the same."""
    space = shm_space()
    if space is not None:
        check(ring, workers, split=split, local_ranks=local_ranks, space=space, held=_held["bytes"])


def hold(ring, nbytes):
    """Count `nbytes` of shared memory (Ring.need) as this process's until `ring` is freed."""
    _held["bytes"] += nbytes
    weakref.finalize(ring, _release, nbytes)


def held():
    """The bytes of the rings this process holds."""
    return _held["bytes"]


def _release(nbytes):
    _held["bytes"] -= nbytes


def _largest_batch(ring, workers, *, local_ranks, space, held):
    """The most rows below ring.rows whose ring for `workers` fits; 0 if not even one."""
    low, high = 0, ring.rows - 1
    while low < high:
        middle = (low + high + 1) // 2
        smaller = Ring(middle, ring.side, ring.itemsize, ring.prefetch, ring.spare)
        if fits(smaller.need(workers), local_ranks=local_ranks, space=space, held=held):
            low = middle
        else:
            high = middle - 1
    return low


def _pages(nbytes):
    return -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE


def _docker_size(nbytes):
    """`nbytes` rounded up as docker's --shm-size spells it: whole GiB from 1 GiB on, else whole MiB."""
    if nbytes >= 2 ** 30:
        return f"{math.ceil(nbytes / 2 ** 30)}g"
    return f"{math.ceil(nbytes / 2 ** 20)}m"
