"""The `cpu` backend: torch DataLoader worker processes that each build whole batches (one task = one batch).

A task is a batch's sample numbers, an augmentation seed and a slot of a ring of batch buffers in shared
memory. The worker preads each sample at the offset its DALI index gives, decodes it with libjpeg-turbo and
crops+resizes it with OpenCV straight into the slot; only the labels travel back through the DataLoader.
For a GPU the slots hold uint8 pixels in pinned memory, copied non_blocking and normalised on the device on
a side stream, one batch ahead; for the CPU the worker normalises into slots of the final dtype and layout.

Why a ring: fresh batch memory costs a page fault per 4 KiB on first touch, which on this class of machine
costs as much as decoding the batch; the ring is touched once. Slots go to tasks in turn: the DataLoader
keeps at most `workers * prefetch_factor` tasks ahead of the one handed out, so a batch's slot is rewritten
only after HELD further batches have been asked for. A batch yielded on the CPU stays valid until then
(clone it to keep it longer), as in FFCV.

Why pread by index rather than the webdataset library's streaming reader: webdataset gives each worker whole
shards and shuffles in a buffer, so an epoch is a sequence of shards, ranks see unequal sample counts unless
resampled, and samples repeat or go missing at the ends. Index reads give the DALI-like contract this
package promises: one global permutation per (seed, epoch) split over the ranks, equal steps per rank,
every sample at most once, at the same speed (one pread per sample, which the decode dwarfs).
"""
import gc
import itertools
import multiprocessing
import warnings
import weakref

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from common.errors import CorruptSample, DataError
from pipeline import crops, dataset, sampling
from pipeline.decode import CorruptImage, crop_resize
from pipeline.normalize import ImageNormalizer, normalize
from pipeline.readers import CorruptLabel, open_reader

# Workers start in milliseconds and share the sample table copy-on-write, even in a process that was itself
# spawned (whose default start method is then spawn). Workers never touch CUDA, and the ring is page-locked
# only once they exist (see _pin), so a fork stays safe.
_FORK = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
PREFETCH = 2
HELD = 2
# What a corrupt sample is, skipped and counted: an image that does not decode, a label that is no number. An I/O
# error (a shard gone, an NFS hiccup) or a damaged shard is no bad sample: it stops the pass.
SKIPPED = (CorruptImage, CorruptLabel)


def make(data_path, options):
    data = dataset.open_dataset(data_path)
    split = data.split(options.split)
    return CpuLoader(open_reader(split), options, num_classes=len(data.classes))


def batches_ahead(options):
    """The DataLoader's tasks in flight, and on a GPU the batch copied one ahead."""
    return options.workers * PREFETCH + (options.device.type == "cuda")


class CpuLoader:
    def __init__(self, reader, options, *, num_classes):
        self.num_classes = num_classes
        self.samples = len(reader)  # in the split, over all ranks
        self.ahead = batches_ahead(options)
        self.skipped = 0
        self._options = options
        self._on_gpu = options.device.type == "cuda"
        self._ring = _ring(options.workers * PREFETCH + HELD, sampling.largest_batch(len(reader), options), options,
                           uint8=self._on_gpu)
        self._unpin = None  # set while the ring is page-locked
        self._tasks = _Tasks(len(reader), options, slots=len(self._ring))
        builder = BatchBuilder(reader, options, self._ring, normalise=not self._on_gpu)
        self._loader = DataLoader(builder, batch_size=None, sampler=self._tasks, num_workers=options.workers,
                                  persistent_workers=True, prefetch_factor=PREFETCH, worker_init_fn=_one_thread,
                                  multiprocessing_context=_FORK)

    def __len__(self):
        return len(self._tasks)

    def set_epoch(self, epoch):
        self._tasks.epoch = epoch

    def __iter__(self):
        batches = self._batches()
        return _gpu_prefetch(batches, self._options) if self._on_gpu else batches

    def _batches(self):
        forks = self._loader._iterator is None  # persistent workers: forked on the first pass, or after an error
        results = _forking_safely(self._loader) if forks else iter(self._loader)
        if self._on_gpu and self._unpin is None:
            self._unpin = _pin(self._ring)
        try:
            for result in results:
                if isinstance(result, DataError):
                    raise result
                yield self._receive(*result)
        except Exception:
            # Left to the garbage collector after an error, torch's worker shutdown waits out its timeouts (10 s).
            results._shutdown_workers()
            self._loader._iterator = None
            if self._unpin:  # the next pass forks new workers: from an unlocked ring
                self._unpin()
                self._unpin = None
            raise

    def _receive(self, slot, kept, labels, skipped):
        for reason in skipped:
            warnings.warn(f"pipeline: skipped corrupt sample {reason}", stacklevel=3)
        self.skipped += len(skipped)
        return self._ring[slot][:kept], torch.as_tensor(labels)


class _Tasks(torch.utils.data.Sampler):
    """This rank's batches of the current epoch, each with a seed for its crops and flips and a ring slot."""

    def __init__(self, samples, options, *, slots):
        self.samples = samples
        self.options = options
        self.epoch = 0
        self._slots = itertools.cycle(range(slots))

    def __len__(self):
        return sampling.steps_per_epoch(self.samples, self.options)

    def __iter__(self):
        o = self.options
        batches = sampling.epoch_batches(self.samples, o, self.epoch)
        seeds = np.random.default_rng([o.seed, self.epoch, o.rank, 1]).integers(0, 2**63, len(batches))
        for batch, seed in zip(batches, seeds.tolist()):
            yield batch, seed, next(self._slots)


class BatchBuilder(torch.utils.data.Dataset):
    """dataset[(sample numbers, seed, slot)] -> (slot, images kept, labels, skipped): fills one ring slot; or the
    DataError that stopped it."""

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

    def _build(self, indices, seed, slot):
        o = self.options
        rng = np.random.default_rng(seed)
        images = self.ring[slot]
        pixels = np.empty((o.crop_size, o.crop_size, 3), np.uint8)
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
        return slot, kept, labels[:kept], skipped

    def _box(self, rng):
        o = self.options
        if o.train:
            return lambda height, width: crops.random_resized_crop(rng, height, width)
        return lambda height, width: crops.center_crop(height, width, o.crop_size, o.val_size)


def _ring(slots, batch, options, *, uint8):
    """`slots` batch buffers in shared memory: uint8 NHWC (pinned) for a GPU, else normalised NCHW views."""
    size = options.crop_size
    if uint8:
        return torch.empty((slots, batch, size, size, 3), dtype=torch.uint8).share_memory_()
    if options.channels_last:
        storage = torch.empty((slots, batch, size, size, 3), dtype=options.dtype).share_memory_()
        return storage.permute(0, 1, 4, 2, 3)
    return torch.empty((slots, batch, 3, size, size), dtype=options.dtype).share_memory_()


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


def _one_thread(worker_id):
    """The parallelism is the workers."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


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
