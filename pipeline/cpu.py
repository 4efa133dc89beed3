"""The `cpu` backend: torch DataLoader worker processes that each build whole batches (one task = one batch).

A task is a batch's sample numbers, an augmentation seed, a slot of a ring of batch buffers in shared memory and
the side of the pass's images. The worker preads each sample at the offset its DALI index gives, decodes it with
libjpeg-turbo and crops+resizes it with OpenCV straight into the slot; only the labels travel back through the
DataLoader. For a GPU the slots hold uint8 pixels in pinned memory, copied non_blocking and normalised on the device
on a side stream, one batch ahead; for the CPU the worker normalises into slots of the final dtype and layout.

Why a ring: fresh batch memory costs a page fault per 4 KiB on first touch, which on this class of machine
costs as much as decoding the batch; the ring is touched once. Slots go to tasks in turn: the DataLoader
keeps at most `workers * prefetch_factor` tasks ahead of the one handed out, so a batch's slot is rewritten
only after HELD further batches have been asked for. A batch yielded on the CPU stays valid until then
(clone it to keep it longer), as in FFCV.

Progressive resizing: the ring is sized once, for crop_size, the largest side. A pass at a smaller side
(set_resolution) fills the head of each slot, viewed in the batch's shape and layout; the side travels to the
workers in each task, so neither the ring nor the workers change with it.

Why pread by index rather than the webdataset library's streaming reader: webdataset gives each worker whole
shards and shuffles in a buffer, so an epoch is a sequence of shards, ranks see unequal sample counts unless
resampled, and samples repeat or go missing at the ends. Index reads give the contract this package promises
(pipeline.sampling): one global permutation per (seed, epoch) consumed in global batches, equal steps per rank,
every sample at most once, a resumed pass that starts where it resumes, at the same speed (one pread per sample,
which the decode dwarfs).
"""
import atexit
import gc
import itertools
import multiprocessing
import os
import signal
import threading
import warnings
import weakref

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from common import procs
from common.errors import CorruptSample, DataError, DataTimeout
from pipeline import crops, memory, sampling
from pipeline.decode import CorruptImage, crop_resize
from pipeline.normalize import ImageNormalizer, normalize
from pipeline.options import check_resolution
from pipeline.readers import CorruptLabel
from pipeline.reading import open_reading

# Workers start in milliseconds and share the sample table copy-on-write, even in a process that was itself
# spawned (whose default start method is then spawn). Workers never touch CUDA, and the ring is page-locked
# only once they exist (see _pin), so a fork stays safe.
_FORK = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
STOP_GRACE_S = 20
_LIVE = weakref.WeakSet()  # loaders whose workers may be running
PREFETCH = 2
HELD = 2
# What a corrupt sample is, skipped and counted: an image that does not decode, a label that is no number. An I/O
# error (a shard gone, an NFS hiccup) or a damaged shard is no bad sample: it stops the pass.
SKIPPED = (CorruptImage, CorruptLabel)
# The last word of a batch's crop seed [seed, epoch, micro-batch, rank, AUGMENT_STREAM]: without it micro-batch 0 of
# rank 0 would seed as [seed, epoch, 0, 0], which SeedSequence (zero-padding to four words) reads as the order's.
AUGMENT_STREAM = 1


def make(data_path, options):
    # The sampler waits for a batch's shards on the thread that hands out results: the tasks in flight ahead of it
    # keep their shards pinned meanwhile, so the cache must hold those too.
    return CpuLoader(open_reading(data_path, options, held=batches_ahead(options)))


def batches_ahead(options):
    """The DataLoader's tasks in flight, and on a GPU the batch copied one ahead."""
    return options.workers * PREFETCH + (options.device.type == "cuda")


class CpuLoader:
    def __init__(self, source):
        options, reader = source.options, source.reader
        self.num_classes = source.num_classes
        self.samples = len(reader)  # in the split, over all ranks
        self.ahead = batches_ahead(options)
        self.skipped = 0
        self.window = source.window
        self.shard_order = source.options.shard_order
        self.cache = source.cache
        self._source = source
        self._options = options
        self._on_gpu = options.device.type == "cuda"
        # The ring's shared memory is checked against /dev/shm (a container's may be 64 MB) before it is taken:
        # NoRoom, in one line, rather than torch's traceback from inside share_memory_().
        ring = memory.Ring(rows=sampling.largest_batch(len(reader), options), side=options.crop_size,
                           itemsize=(torch.uint8 if self._on_gpu else options.dtype).itemsize, prefetch=PREFETCH,
                           spare=HELD)
        memory.make_room(ring, options.workers, split=options.split, local_ranks=len(options.node_ranks))
        self._ring = _Ring(ring.slots(options.workers), ring.rows, options, uint8=self._on_gpu)
        memory.hold(self._ring, ring.need(options.workers))  # what this process's next loader counts against /dev/shm
        self._unpin = None  # set while the ring is page-locked
        self._tasks = _Tasks(len(reader), options, slots=len(self._ring))
        builder = BatchBuilder(reader, options, self._ring, normalise=not self._on_gpu)
        self._loader = DataLoader(builder, batch_size=None, sampler=self._tasks, num_workers=options.workers,
                                  persistent_workers=True, prefetch_factor=PREFETCH, worker_init_fn=_start_worker,
                                  multiprocessing_context=_FORK, timeout=options.data_timeout)
        _LIVE.add(self)

    def __len__(self):
        return len(self._tasks)

    def set_epoch(self, epoch, start=0):
        sampling.check_start(self.samples, self._options, start)
        self._tasks.epoch, self._tasks.start = epoch, start

    def set_resolution(self, size):
        check_resolution(self._options, size)
        self._tasks.size = size

    def __iter__(self):
        batches = self._batches()
        return _gpu_prefetch(batches, self._options) if self._on_gpu else batches

    def _batches(self):
        # The pass's batches come to the sampler through `source`, which hands out each only once its shards are at
        # hand (a URL's); its workers may still finish the tasks of a pass left early, whose results torch drops.
        this_pass = self._tasks.batches = self._source.start_pass(self._tasks.epoch, self._tasks.start)
        try:
            forks = self._loader._iterator is None  # persistent workers: forked on the first pass, or after an error
            results = _forking_safely(self._loader) if forks else iter(self._loader)
            if self._on_gpu and self._unpin is None:
                self._unpin = self._ring.pin()
            for step, result in enumerate(_bounded(results, self._options)):
                if isinstance(result, DataError):
                    raise result
                this_pass.consumed(step)
                yield self._receive(*result)
        except Exception:
            # Left to the garbage collector after an error, torch's worker shutdown waits out its timeouts (10 s);
            # and the next pass forks new workers, from an unlocked ring.
            self.close()
            raise
        finally:
            this_pass.close()

    def close(self):
        """Stop the workers now (the next pass starts new ones), through torch's shutdown: a sentinel they exit on."""
        if self._loader._iterator is not None:
            self._loader._iterator._shutdown_workers()
            self._loader._iterator = None
        if self._unpin:
            self._unpin()
            self._unpin = None
        self._source.close_pass()

    def _receive(self, slot, size, kept, labels, skipped):
        for reason in skipped:
            warnings.warn(f"pipeline: skipped corrupt sample {reason}", stacklevel=3)
        self.skipped += len(skipped)
        return self._ring.batch(slot, size)[:kept], self._ring.batch_labels(slot, labels)


class _Tasks(torch.utils.data.Sampler):
    """This rank's batches of the next pass (epoch, from start, at `size`; the source's pass, set before each),
    each with a seed for its crops and flips and a ring slot."""

    def __init__(self, samples, options, *, slots):
        self.samples = samples
        self.options = options
        self.epoch = 0
        self.start = 0
        self.size = options.crop_size
        self.batches = ()
        self._slots = itertools.cycle(range(slots))

    def __len__(self):
        return sampling.pass_steps(self.samples, self.options, self.start)

    def __iter__(self):
        o, size = self.options, self.size  # as the pass starts: a set_resolution during it waits for the next
        first = sampling.first_micro_batch(self.start, o)
        # A batch's seed is its micro-batch's number in the epoch (over all ranks), not its place in this pass: a
        # pass resumed at a micro-batch boundary on the same world size and per-rank batch gives the same ranks the
        # same samples under the same numbers, so its batches are bit-identical to the unbroken pass's.
        for number, batch in enumerate(self.batches, first):
            yield batch, (o.seed, self.epoch, number, o.rank, AUGMENT_STREAM), next(self._slots), size


class BatchBuilder(torch.utils.data.Dataset):
    """dataset[(sample numbers, seed, slot, size)] -> (slot, size, images kept, labels, skipped): fills one ring slot
    with size x size images; or the DataError that stopped it."""

    def __init__(self, reader, options, ring, *, normalise):
        self.reader = reader
        self.options = options
        self.ring = ring
        self.normalise = ImageNormalizer(options.crop_size, options.dtype, options.channels_last) if normalise \
            else None

    def __getitem__(self, task):
        try:
            return self._build(*task)
        except DataError as error:  # handed back whole: torch would re-raise it wrapped in the worker's traceback
            return error

    def _build(self, indices, seed, slot, size):
        o = self.options
        rng = np.random.default_rng(seed)  # seed: a tuple of ints, the entropy of a SeedSequence
        images = self.ring.batch(slot, size)
        pixels = np.empty((size, size, 3), np.uint8)
        labels = np.empty(len(indices), np.int64)
        kept, skipped = 0, []
        for i in indices:
            target = pixels if self.normalise else images[kept].numpy()
            try:
                data, labels[kept] = self.reader.read(i)
                crop_resize(data, self._box(rng), target, flip=o.train and rng.random() < 0.5)
            except SKIPPED as error:
                where = self.reader.describe(i)
                if o.strict:
                    raise CorruptSample(f"corrupt sample {where}: {error}") from None
                skipped.append(f"{where} ({error})")
                continue
            if self.normalise:
                self.normalise(pixels, images[kept])
            kept += 1
        # Labels as a list go through the pipe: a tensor would be a shared-memory object of its own, whose descriptor
        # the receiver must fetch from this process, so a worker stopped mid-hand-over would hold it past any timeout.
        return slot, size, kept, labels[:kept].tolist(), skipped

    def _box(self, rng):
        o = self.options
        if o.train:
            return lambda height, width: crops.random_resized_crop(rng, height, width, o.crop_scale, o.crop_ratio)
        return lambda height, width: crops.center_crop(height, width, o.crop_size, o.val_size)


class _Ring:
    """`slots` batch buffers in shared memory, each the flat storage of `rows` crop_size images: uint8 (pinned) for a
    GPU, else the final dtype. A slot's batch of a smaller side is the head of that storage, so one allocation, made
    and touched once, serves every side set_resolution may ask for."""

    def __init__(self, slots, rows, options, *, uint8):
        self.rows = rows
        self.uint8 = uint8
        self.channels_last = options.channels_last
        dtype = torch.uint8 if uint8 else options.dtype
        self.storage = torch.empty((slots, rows * 3 * options.crop_size ** 2), dtype=dtype).share_memory_()
        # The labels come through the workers' pipe; each batch's are put in its slot's row, where they stay valid
        # as long as its pixels. Pinned (pin) for a GPU, so that their copy, like the pixels', waits for nothing:
        # a copy from pageable memory would make the host wait for the side stream on every batch.
        self.labels = torch.empty((slots, rows), dtype=torch.int64)

    def __len__(self):
        return len(self.storage)

    def pin(self):
        """Page-lock the pixels and the labels for asynchronous copies to the GPU; the function that unlocks them."""
        self.labels = _pinned(self.labels)
        return _pin(self.storage)

    def batch_labels(self, slot, labels):
        """`labels` (a list) in slot `slot`'s row."""
        row = self.labels[slot, :len(labels)]
        row.copy_(torch.as_tensor(labels, dtype=torch.int64))
        return row

    def batch(self, slot, size):
        """Slot `slot` as `rows` size x size images: uint8 NHWC for a GPU, else normalised NCHW views (channels_last
        strides when asked)."""
        head = self.storage[slot, :self.rows * 3 * size * size]
        if self.uint8:
            return head.view(self.rows, size, size, 3)
        if self.channels_last:
            return head.view(self.rows, size, size, 3).permute(0, 3, 1, 2)
        return head.view(self.rows, 3, size, size)


def _pin(tensor):
    """Page-lock shared memory in place (as torch.distributed.checkpoint stages), so copies to the GPU run
    asynchronously straight from the ring; returns the function that unlocks it.

    Only after the workers are forked: what a driver does to locked pages at a fork is its own (ROCm marks them
    MADV_DONTFORK, so a child that writes them faults), while locking shared pages that forked children
    already map changes nothing for them."""
    cudart = torch.cuda.cudart()
    nbytes = tensor.numel() * tensor.element_size()
    error = int(cudart.cudaHostRegister(tensor.data_ptr(), nbytes, 1))  # 1: cudaHostRegisterPortable
    if error:
        raise RuntimeError(f"pipeline: cudaHostRegister of the {nbytes >> 20} MiB batch ring failed (error {error})")
    return weakref.finalize(tensor, cudart.cudaHostUnregister, tensor.data_ptr())


def _pinned(tensor):
    return tensor.pin_memory()


def _forking_safely(loader):
    """iter(loader), which forks the workers when they do not exist yet. Garbage that holds native threads (a
    DALI pipeline left in a reference cycle, say) is collected first, here, and what lives on is kept out of the
    workers' collections: its destructor must never run in a forked copy of the process."""
    gc.collect()
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


def _bounded(results, options):
    """The DataLoader's results; its timeout (options.data_timeout, per batch) as a DataTimeout saying what waited."""
    step = 0
    while True:
        try:
            result = next(results)
        except StopIteration:
            return
        except RuntimeError as error:
            if not str(error).startswith("DataLoader timed out"):
                raise
            raise DataTimeout(f"rank {options.rank}: waited {options.data_timeout:g} s for batch {step} of the pass "
                              f"from its {options.workers} loader workers (a worker is stuck reading the data, or was "
                              "stopped)") from None
        yield result
        step += 1


def _start_worker(worker_id):
    """The parallelism is the workers. A stop signal is the trainer's to act on: SLURM signals every process of a
    job, a terminal its whole process group, and a worker that died at once would fail the step in flight before
    the trainer could checkpoint. So SIGINT and SIGUSR1 are ignored, and SIGTERM ends a worker only STOP_GRACE_S
    later (by then the trainer has checkpointed and shut its workers down, or is being killed). A trainer killed
    with -9 takes its workers with it (common.procs), rather than leave them asleep."""
    parent = multiprocessing.parent_process()
    procs.die_with_parent(parent.pid if parent else os.getppid())
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for number in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(number, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_later)


def _exit_later(number, frame):
    timer = threading.Timer(STOP_GRACE_S, os._exit, args=(128 + number,))
    timer.daemon = True
    timer.start()


@atexit.register
def _shut_down_workers():
    """At exit, stop the workers of every live loader through torch's own shutdown (a sentinel they exit on) before
    multiprocessing's exit handler would terminate them: a worker's SIGTERM only schedules its exit."""
    for loader in list(_LIVE):
        loader.close()


def _gpu_prefetch(batches, options):
    """Copy each uint8 batch to the GPU and normalise it on a side stream while the previous one is consumed.

    Before a further batch is taken from the workers (which may reuse the slot of the batch two back), the
    copy out of that slot must be finished; so must every copy when the pass ends or is abandoned, before the
    next pass sends the workers to the ring.
    """
    stream = torch.cuda.Stream(options.device)
    copies, pending = [], None
    try:
        for pixels, labels in batches:
            with torch.cuda.stream(stream):
                images = normalize(pixels.to(options.device, non_blocking=True), options.dtype,
                                   options.channels_last)
                labels = labels.to(options.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(stream)
            copies.append(done)
            if pending is not None:
                yield _handover(*pending)
            pending = (images, labels, done)
            if len(copies) == HELD:
                copies.pop(0).synchronize()
        if pending is not None:
            yield _handover(*pending)
    finally:
        for done in copies:
            done.synchronize()


def _handover(images, labels, done):
    consumer = torch.cuda.current_stream(images.device)
    consumer.wait_event(done)
    images.record_stream(consumer)
    labels.record_stream(consumer)
    return images, labels
