"""The `dali` and `dali-cpu` backends: one DALI graph, decoding on the GPU (nvJPEG, "mixed") or on CPU threads.

Train: ROI decode of a random crop (the options' crop_scale and crop_ratio), resize to the pass's side, random
mirror, normalise. Val: decode, resize the shorter side to val_size, centre crop to crop_size. Without a GPU
everything runs on the CPU (device_id=None); with one, `dali-cpu` decodes and resizes on CPU threads and normalises
on the GPU.

Progressive resizing without a second pipeline: the external source hands DALI each sample's output side as a
float (train: crop_size, or what set_resolution set for the pass; validation: crop_size), the argument input of
fn.resize's resize_x and resize_y (train) and of crop_mirror_normalize's crop_h and crop_w (validation's centre
crop). Both take a per-sample TensorList on either device as long as it lives on the CPU, as the source's outputs
do; nothing in the graph has a fixed output size. The pytorch plugin's iterator allocates each batch's tensors from
that batch's shape, so the shape may change between passes.

Order: the samples come from the same sampler and readers as the `cpu` backend (pipeline.reading: sampling's
batches, each once its shards are local, and readers.open_reader), handed to DALI batch by batch through an
external source, so every backend reads the same sequence for a (seed, epoch, start): equal steps per rank, every
sample at most once, validation exactly once (its last batch may be short). A pass resumed at `start` plans its
batches from there, so DALI is never handed a sample before it. DALI decodes, crops and resizes; it no longer
chooses what to read. Its crops and flips come from its own RNG, so a resumed pass reads the same samples as the
unbroken one but not the same crops.

One pipeline for the loader's life: building one sets up the decoder's per-thread device and pinned buffers,
which is worth doing once, not every pass. A pass that ends early (a step cap, a stop, an error elsewhere)
only leaves the batches DALI had prefetched, which the next pass drains before it starts.

Corrupt samples: DALI's decoders raise and there is no per-sample skip. When DALI fails, the samples it was
given are decoded again on the CPU to find the one that does not decode: that is a DecodeError naming it.
Any other failure (out of memory, a bad argument) propagates as DALI raised it.
"""
import collections
import contextlib
import queue
import threading

import numpy as np
import torch

from common.errors import DataTimeout, DecodeError
from pipeline import crops, sampling
from pipeline.decode import CorruptImage, check_decodes
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD, check_resolution
from pipeline.readers import CorruptLabel
from pipeline.reading import Pass, open_reading

# DeepLearningExamples' share of images for the A100/H100 hardware decoder.
MIXED_DECODER = dict(device="mixed", hw_decoder_load=0.65)
PREFETCH = 2  # DALI's prefetch_queue_depth: batches in flight besides the one being consumed
GIVEN = PREFETCH + 2  # batches whose samples the source remembers, to find one DALI could not decode
FED_AHEAD = 2  # batches the feeder thread reads ahead of DALI's asking
# Batches whose TensorLists the source keeps after handing them over. DALI shares them (no_copy) and asks that they
# stay alive and unchanged until it is done with them, prefetch_queue_depth batches after it took them; nothing
# writes them, and when the feeder makes a batch, DALI has taken all but the FED_AHEAD + 1 made before it. They are
# kept across passes, since a pass's last batches are drained from DALI only when the next pass starts.
KEPT = FED_AHEAD + 1 + PREFETCH + 2
HELD = GIVEN + FED_AHEAD + 1  # batches whose shards the source may hold: given, queued, and the one being read
STOP_POLL_S = 0.1
LABEL_BYTES = 8  # own_reader's labels: a .cls member's digits, padded


def make(data_path, options):
    return DaliLoader(open_reading(data_path, options, held=HELD))


def batches_ahead(options):
    return PREFETCH


class DaliLoader:
    def __init__(self, source):
        options = source.options
        self.num_classes = source.num_classes
        self.samples = len(source.reader)  # in the split, over all ranks
        self.ahead = batches_ahead(options)
        self.skipped = 0
        self.window = source.window
        self.shard_order = source.options.shard_order
        self.cache = source.cache
        self._data = source
        self._options = options
        self._epoch = 0
        self._start = 0
        self._size = options.crop_size
        self._source = _Feed(source.reader, options.data_timeout)
        self._iterator = None

    def __len__(self):
        return sampling.pass_steps(self.samples, self._options, self._start)

    def set_epoch(self, epoch, start=0):
        sampling.check_start(self.samples, self._options, start)
        self._epoch, self._start = epoch, start

    def set_resolution(self, size):
        check_resolution(self._options, size)
        self._size = size

    def __iter__(self):
        iterator, this_pass = self._start_pass()
        try:
            for _ in range(len(self)):
                with self._source.decode_errors():
                    (outputs,) = next(iterator)
                yield self._images(outputs["images"]), outputs["labels"].view(-1)
        except Exception:
            self._iterator = None  # DALI's state after a failure is unknown: the next pass builds afresh
            raise
        finally:
            self._source.stop()
            this_pass.close()

    def _start_pass(self):
        """(The DALI iterator, drained of the previous pass and reset to this pass's batches; the pass.)"""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if self._iterator is not None:
            self._source.plan(Pass([]), self._size)
            with contextlib.suppress(StopIteration):
                while True:
                    next(self._iterator)
        this_pass = self._data.start_pass(self._epoch, self._start)
        self._source.plan(this_pass, self._size)
        if self._iterator is None:
            pipe = _pipeline(self._source, self._options)
            # size -1: the epoch ends where the source raises StopIteration; batches may be short (val)
            self._iterator = DALIGenericIterator([pipe], ["images", "labels"], prepare_first_batch=False)
        else:
            self._iterator.reset()
        return self._iterator, this_pass

    def _images(self, images):
        o = self._options
        if o.channels_last:
            images = images.permute(0, 3, 1, 2)  # HWC samples are the NCHW batch in channels_last strides
        return images.to(o.dtype)  # DALI has no bf16: the cast happens here (a no-op for its own dtypes)


class _Feed:
    """DALI's external source: the planned batches, each as three DALI TensorLists (JPEG bytes, int64 labels,
    float32 sides: each output image's side). DALI calls it inside next(), on the thread that launches the model, so
    everything per sample is done ahead by a feeder thread, FED_AHEAD batches at most, in the pass's order: the
    pass's gate on the cache, a pread per sample, and the batch gathered into TensorLists; the call only takes the
    next batch. DALI shares those lists (no_copy: see KEPT) instead of copying them on the calling thread. It holds
    no reference to the loader, so dropping the loader frees the pipeline at once (a cycle would leave it to the
    garbage collector, which might run it in a forked worker process)."""

    def __init__(self, reader, timeout):
        self.reader = reader
        self._timeout = timeout  # the longest wait for the feeder's next batch
        self._pass = Pass([])
        self._read = 0
        self._given = collections.deque(maxlen=GIVEN)  # sample numbers of the batches DALI holds
        self._made = collections.deque(maxlen=KEPT)  # the last batches the feeders made: see KEPT
        self._feeder = None  # (its queue of batches, its stop event) for the planned pass

    def plan(self, this_pass, size):
        """Hand out `this_pass`'s batches, for `size` x `size` images."""
        self.stop()
        self._pass, self._read = this_pass, 0
        self._given.clear()
        ready, stopped = queue.Queue(FED_AHEAD), threading.Event()
        threading.Thread(target=self._feed, args=(iter(this_pass), size, ready, stopped), name="dali-feed",
                         daemon=True).start()
        self._feeder = (ready, stopped)

    def stop(self):
        """Stop the planned pass's feeder (it ends at its next batch; a daemon, it never holds the process)."""
        if self._feeder is not None:
            self._feeder[1].set()
            self._feeder = None

    def _feed(self, batches, size, ready, stopped):
        try:
            for indices in batches:
                lists = self._gather(indices, size)
                self._made.append(lists)
                if not _put(ready, (indices, lists), stopped):
                    return
            _put(ready, StopIteration(), stopped)  # ends DALI's epoch
        except Exception as error:  # raised to DALI's caller, as when the source read on its thread
            _put(ready, error, stopped)

    def _gather(self, indices, size):
        """The batch of sample numbers `indices` as DALI's TensorLists: the JPEGs copied into one list DALI owns (a
        list of arrays would cost a Python call per sample on the calling thread), the labels and sides wrapped."""
        from nvidia.dali.tensors import TensorListCPU

        jpegs, labels = [], np.empty(len(indices), np.int64)
        for k, i in enumerate(indices):
            data, labels[k] = self.reader.read(i)
            jpegs.append(np.frombuffer(data, np.uint8))
        return TensorListCPU(jpegs), TensorListCPU(labels), TensorListCPU(np.full(len(indices), size, np.float32))

    def __call__(self):
        if self._feeder is None:  # no pass planned (or it was left): DALI's epoch is over
            raise StopIteration
        try:
            batch = self._feeder[0].get(timeout=self._timeout)
        except queue.Empty:
            raise DataTimeout(f"waited {self._timeout:g} s for batch {self._read} of the pass from the DALI feed "
                              "thread") from None
        if isinstance(batch, Exception):
            self._feeder[0].put(batch)  # DALI may ask again: the pass stays ended (or failed)
            raise batch
        indices, lists = batch
        self._given.append(indices)
        # The batches DALI holds are read again to find one it cannot decode: their shards stay until they leave.
        self._pass.consumed(self._read - self._given.maxlen)
        self._read += 1
        return lists

    @contextlib.contextmanager
    def decode_errors(self):
        try:
            yield
        except RuntimeError as error:
            culprit = self._undecodable()
            if culprit is None:
                raise
            raise DecodeError(f"DALI could not decode {culprit}; DALI cannot skip samples: check the "
                              "data with python -m prep.verify, or use the cpu backend, which skips and counts "
                              "corrupt samples") from error

    def _undecodable(self):
        """'<where> (<why>)' of the first sample DALI was given that the CPU decoder cannot decode, else None."""
        for batch in self._given:
            for i in batch:
                try:
                    check_decodes(self.reader.read(i)[0])
                except (CorruptImage, CorruptLabel) as reason:
                    return f"{self.reader.describe(i)} ({reason})"
        return None


def _put(ready, item, stopped):
    """Put `item` on `ready` once there is room, unless the feeder is stopped first; whether it was put."""
    while not stopped.is_set():
        try:
            ready.put(item, timeout=STOP_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _pipeline(source, options):
    """The loader's graph, fed by `source` (a _Feed) through DALI's external source."""
    from nvidia.dali import fn, types

    def inputs():
        return fn.external_source(source, num_outputs=3, batch=True, no_copy=True,
                                  dtype=[types.UINT8, types.INT64, types.FLOAT], ndim=[1, 0, 0])

    return _graph(inputs, sampling.largest_batch(len(source.reader), options), options)


def _graph(inputs, batch_size, options):
    """The DALI pipeline that decodes, crops, resizes and normalises the (JPEGs, labels, sides) that `inputs()` makes
    inside it: the one graph, whatever feeds it."""
    from nvidia.dali import pipeline_def

    o = options
    on_gpu = o.device.type == "cuda"
    seed = int(np.random.default_rng([o.seed, o.rank, 2]).integers(0, 2**31))
    device_id = None
    if on_gpu:
        device_id = torch.cuda.current_device() if o.device.index is None else o.device.index

    # The dynamic executor (DALI 2's default) segfaults when a CPU decoder fails; the classic one raises.
    @pipeline_def(batch_size=batch_size, num_threads=o.workers, seed=seed, device_id=device_id,
                  prefetch_queue_depth=PREFETCH, exec_dynamic=False)
    def graph():
        jpegs, labels, sides = inputs()
        images = _decode_crop_resize(jpegs, sides, o)
        if on_gpu:
            # on the device in DALI, so the iterator copies them there on the consumer's stream: a pageable
            # host-to-device copy of the labels would wait for the stream every step
            labels = labels.gpu()
            if not o.gpu_decode:
                images = images.gpu()
        return _normalize(images, sides, o), labels

    return graph()


def own_reader(loader):
    """What bench.feed measures the loader against: `loader`'s graph (a DaliLoader's, on local shards) fed by DALI's
    own webdataset reader instead of the external source, as a DALIGenericIterator that never ends (the reader
    starts over). DALI's order, not the shared sampler's; each label its .cls member's bytes, padded to LABEL_BYTES."""
    from nvidia.dali import fn, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    reader, o = loader._data.reader, loader._options
    if getattr(reader, "_cached", True):
        raise ValueError("pipeline: own_reader reads local shards; this loader reads a URL or a folder layout")

    def inputs():
        jpegs, labels = fn.readers.webdataset(paths=[str(tar) for tar in reader.table.tars],
                                              index_paths=reader.indexes, ext=["jpg", "cls"], random_shuffle=True)
        sides = types.Constant(float(loader._size), dtype=types.FLOAT, device="cpu")
        return jpegs, fn.pad(labels, shape=[LABEL_BYTES]), sides

    return DALIGenericIterator([_graph(inputs, o.batch_size, o)], ["images", "labels"])


def _decode_crop_resize(jpegs, sides, options):
    """`sides`: each image's output side, a CPU node, as argument inputs must be, also for the GPU resize."""
    from nvidia.dali import fn, types

    o = options
    decoder = MIXED_DECODER if o.gpu_decode else dict(device="cpu")
    resize_device = "gpu" if o.gpu_decode else "cpu"
    if o.train:
        images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB, random_area=list(o.crop_scale),
                                               random_aspect_ratio=list(o.crop_ratio), num_attempts=crops.ATTEMPTS,
                                               **decoder)
        return fn.resize(images, device=resize_device, resize_x=sides, resize_y=sides,
                         interp_type=types.INTERP_LINEAR)
    images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder)
    return fn.resize(images, device=resize_device, resize_shorter=o.val_size, interp_type=types.INTERP_LINEAR)


def _normalize(images, sides, options):
    from nvidia.dali import fn, types

    o = options
    dtype = types.FLOAT if o.dtype == torch.float32 else types.FLOAT16  # DALI has no bf16: cast after
    if o.train:  # already at the pass's side: flipped at random, not cut
        geometry = dict(mirror=fn.random.coin_flip(probability=0.5))
    else:  # the val_size resize, cut to its side (crop_size) in the centre
        geometry = dict(crop_h=sides, crop_w=sides)
    return fn.crop_mirror_normalize(images, dtype=dtype, output_layout="HWC" if o.channels_last else "CHW",
                                    mean=[m * 255 for m in IMAGENET_MEAN], std=[s * 255 for s in IMAGENET_STD],
                                    **geometry)
