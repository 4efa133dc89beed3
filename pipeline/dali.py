"""The `dali` and `dali-cpu` backends: one DALI graph, decoding on the GPU (nvJPEG, "mixed") or on CPU threads.

Train: ROI decode of a random crop (area 0.08-1, aspect 3/4-4/3), resize to crop_size, random mirror,
normalise. Val: decode, resize the shorter side to val_size, centre crop. Without a GPU everything runs on
the CPU (device_id=None); with one, `dali-cpu` decodes and resizes on CPU threads and normalises on the GPU.

Epochs: a fresh pipeline per train epoch, seeded by (seed, epoch), so `set_epoch` alone fixes the order.
Shards: the epoch permutes the tar order, DALI cuts the sample sequence into `world` contiguous shares
(shard_id/num_shards) and shuffles each within a buffer of SHUFFLE_BUFFER samples; DROP gives every rank
floor(samples / world) // batch_size steps. Folder layout: the file list is passed in the epoch's global
permutation, the very order the `cpu` backend reads. Val: stored order, reader padding (pad_last_batch)
removed by the iterator (PARTIAL), so each image counts once.

Corrupt samples: DALI's decoders raise and there is no per-sample skip, so a corrupt image ends the epoch
with DecodeError (`strict` is always on, `skipped` stays 0). prep rejects undecodable inputs, and
`prep.verify` checks shard hashes; the `cpu` backend skips and counts instead.
"""
import contextlib

import numpy as np
import torch

from pipeline import dataset, sampling
from pipeline.options import IMAGENET_MEAN, IMAGENET_STD

READER = "reader"
SHUFFLE_BUFFER = 4096
LABEL_DIGITS = 8
# DeepLearningExamples' share of images for the A100/H100 hardware decoder. Not their memory paddings: those
# are per decoding thread, gigabytes of device and pinned memory at 16 threads, set up again for every pass.
MIXED_DECODER = dict(device="mixed", hw_decoder_load=0.65)


class DecodeError(RuntimeError):
    pass


def make(data_path, backend, options):
    if backend == "dali" and options.device.type != "cuda":
        raise SystemExit("pipeline: backend dali decodes on the GPU and needs a CUDA device; use dali-cpu")
    data = dataset.open_dataset(data_path)
    return DaliLoader(data.split(options.split), options, gpu_decode=backend == "dali",
                      num_classes=len(data.classes))


class DaliLoader:
    def __init__(self, split, options, *, gpu_decode, num_classes):
        self.num_classes = num_classes
        self.skipped = 0
        self._split = split
        self._options = options
        self._gpu_decode = gpu_decode
        self._epoch = 0
        self._steps = sampling.steps_per_epoch(split.samples, options)

    def __len__(self):
        return self._steps

    def set_epoch(self, epoch):
        self._epoch = epoch

    def __iter__(self):
        """A fresh pipeline per pass: DALI cannot restart mid-epoch, and a rank with the shorter val share
        stops before DALI's padded end."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        o = self._options
        pipe = _pipeline(self._split, o, gpu_decode=self._gpu_decode, epoch=self._epoch)
        policy = LastBatchPolicy.DROP if o.train else LastBatchPolicy.PARTIAL
        with _decode_errors():
            iterator = DALIGenericIterator([pipe], ["images", "labels"], reader_name=READER,
                                           last_batch_policy=policy)
        for _ in range(self._steps):
            with _decode_errors():
                (outputs,) = next(iterator)
            yield self._to_device(outputs["images"]), self._labels(outputs["labels"])

    def _to_device(self, images):
        o = self._options
        if o.channels_last:
            images = images.permute(0, 3, 1, 2)
        return images.to(o.device, o.dtype, non_blocking=True)

    def _labels(self, labels):
        if labels.dtype == torch.uint8:
            labels = parse_decimal(labels)
        return labels.view(-1).to(self._options.device, torch.int64, non_blocking=True)


@contextlib.contextmanager
def _decode_errors():
    """DALI reports a failed sample as a RuntimeError from whichever call ran the pipeline; other errors (out of
    memory, a bad argument) pass through as they are."""
    try:
        yield
    except RuntimeError as error:
        if "decod" not in str(error).lower():
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        cause = lines[lines.index("encountered:") + 1] if "encountered:" in lines[:-1] else lines[0]
        raise DecodeError(f"pipeline: DALI stopped on a sample it could not read ({cause}); DALI cannot skip "
                          "samples: check the shards with prep.verify, or use the cpu backend, which skips and "
                          "counts corrupt samples") from None


def parse_decimal(digits):
    """[N, LABEL_DIGITS] zero-padded ASCII decimals -> [N] int64, vectorised over the batch."""
    digits = digits.to(torch.int64)
    value = torch.zeros(len(digits), dtype=torch.int64, device=digits.device)
    for column in digits.T:
        value = torch.where(column > 0, value * 10 + (column - ord("0")), value)
    return value


def _pipeline(split, options, *, gpu_decode, epoch):
    from nvidia.dali import pipeline_def

    on_gpu = options.device.type == "cuda"
    seed = int(np.random.default_rng([options.seed, epoch, options.rank, 2]).integers(0, 2**31))

    device_id = None
    if on_gpu:
        device_id = torch.cuda.current_device() if options.device.index is None else options.device.index

    # The dynamic executor (DALI 2's default) segfaults when a CPU decoder fails; the classic one raises.
    @pipeline_def(batch_size=options.batch_size, num_threads=options.workers, seed=seed, device_id=device_id,
                  exec_dynamic=False)
    def graph():
        jpegs, labels = _reader(split, options, epoch, seed)
        images = _decode_crop_resize(jpegs, options, gpu_decode)
        if on_gpu and not gpu_decode:
            images = images.gpu()
        return _normalize(images, options), labels

    pipe = graph()
    pipe.build()
    return pipe


def _reader(split, options, epoch, seed):
    from nvidia.dali import fn

    o = options
    sharding = dict(name=READER, shard_id=o.rank, num_shards=o.world, pad_last_batch=not o.train, seed=seed)
    if isinstance(split, dataset.ShardSplit):
        order = np.random.default_rng([o.seed, epoch]).permutation(len(split.tars)) if o.train \
            else np.arange(len(split.tars))
        jpegs, cls = fn.readers.webdataset(
            paths=[str(split.tars[i]) for i in order], index_paths=[str(split.indexes[i]) for i in order],
            ext=["jpg", "cls"], missing_component_behavior="error", random_shuffle=o.train,
            initial_fill=SHUFFLE_BUFFER, **sharding)
        return jpegs, fn.pad(cls, axes=[0], shape=[LABEL_DIGITS], fill_value=0)
    order = np.random.default_rng([o.seed, epoch]).permutation(split.samples) if o.train \
        else np.arange(split.samples)
    return fn.readers.file(file_root=str(split.root), files=[split.files[i] for i in order],
                           labels=split.labels[order].astype(np.int32).tolist(), **sharding)


def _decode_crop_resize(jpegs, options, gpu_decode):
    from nvidia.dali import fn, types

    o = options
    decoder = MIXED_DECODER if gpu_decode else dict(device="cpu")
    resize_device = "gpu" if gpu_decode else "cpu"
    if o.train:
        images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB, random_area=[0.08, 1.0],
                                               random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=100, **decoder)
        return fn.resize(images, device=resize_device, resize_x=o.crop_size, resize_y=o.crop_size,
                         interp_type=types.INTERP_LINEAR)
    images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder)
    return fn.resize(images, device=resize_device, resize_shorter=o.val_size, interp_type=types.INTERP_LINEAR)


def _normalize(images, options):
    from nvidia.dali import fn, types

    o = options
    dtype = types.FLOAT if o.dtype == torch.float32 else types.FLOAT16  # DALI has no bf16: cast after
    mirror = fn.random.coin_flip(probability=0.5) if o.train else 0
    return fn.crop_mirror_normalize(images, dtype=dtype, output_layout="HWC" if o.channels_last else "CHW",
                                    crop=(o.crop_size, o.crop_size), mean=[m * 255 for m in IMAGENET_MEAN],
                                    std=[s * 255 for s in IMAGENET_STD], mirror=mirror)
