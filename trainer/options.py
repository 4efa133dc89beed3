"""The trainer's option groups (common.options): each field is a flag, spelled as the ResNet-50 guide, pytorch/examples
(as the VGG16 guide adapted it) or the recipes spell it, with its parse-time check and what a --resume does with it.
The data group is the pipeline's (pipeline.DataOptions); RunConfig (trainer/config.py) holds them all."""
import argparse
import math
import urllib.parse
from dataclasses import dataclass
from typing import ClassVar

from common.cli import count_or_all, integer, number, positive_number
from common.errors import UsageError
from common.options import MODEL, SCHEDULE, Flag, option
from trainer.distributed import BACKENDS

AMP = ("off", "fp16", "bf16")
SCHEDULES = ("step", "cosine", "linear")
# apex's optimisation levels as torch autocast: O1 and O2 both train fp16 with a GradScaler, since torch has no
# "fp16 model with fp32 master weights" mode (apex's O2).
OPT_LEVELS = {"O0": "off", "O1": "fp16", "O2": "fp16"}
AUTO = "auto"  # --resume's default
DEFAULT_DATA = "shards"
RAW = "ILSVRC2012"  # the folder of the downloaded archives, as the guides name it
SECONDS_PER = {"s": 1, "m": 60, "h": 3600}


def prep_command(src=RAW, out=DEFAULT_DATA + "/"):
    return f"python -m prep.imagenet --src {src} --out {out}"


def _loss_scale(text):
    if text == "dynamic":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number or dynamic, got {text!r}")
    return value


def _every(text):
    """--checkpoint-every: (steps, None) for a count, (None, seconds) for `<number>s|m|h`."""
    unit = SECONDS_PER.get(text[-1:])
    try:
        value = float(text[:-1]) if unit else int(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of steps, or of seconds, minutes or hours such as 30m, "
                                         f"got {text!r}")
    return (None, value * unit) if unit else (value, None)


def _dist_url(url):
    parts = urllib.parse.urlsplit(url)
    try:
        tcp_address = parts.hostname and parts.port
    except ValueError:  # a port that is no number
        tcp_address = None
    if not (url == "env://" or parts.scheme == "file" and parts.path or parts.scheme == "tcp" and tcp_address):
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT, file://PATH or env://, got {url!r}")
    return url


def _backend(name):
    if name == "hccl":
        raise argparse.ArgumentTypeError("hccl is Ascend's backend (torch_npu), not available here; "
                                         "use nccl on CUDA or gloo on CPU")
    if name not in BACKENDS:
        raise argparse.ArgumentTypeError(f"expected {' or '.join(BACKENDS)}, got {name!r}")
    return name


def _device_list(text):
    try:
        devices = [int(part) for part in text.split(",")]
    except ValueError:
        devices = []
    if not devices or min(devices) < 0 or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"expected distinct device numbers such as 0,1,2,3, got {text!r}")
    return devices


@dataclass(frozen=True, kw_only=True)
class RunControl:
    """Where the data is and the run goes, how long it runs, when it checkpoints, evaluates and stops."""
    TITLE: ClassVar[str] = "run (the ResNet-50 guide's flags, and what controls the run)"
    data_path: str | None = option(
        "--data-path", "--data_path", "--data",
        help=f"prep output dir (manifest.json) or DeepLearningExamples layout (default: {DEFAULT_DATA}, where "
             f"`{prep_command()}` writes it); or its URL: s3://, gs://, https:// (read through --cache-dir)")
    output_dir: str = option("--output-dir", "--output_dir", default="runs",
                             help="report.json, logs, checkpoints (default: runs)")
    epochs: int = option("--epochs", type=integer(1), default=90, keep=SCHEDULE)
    training_step_per_epoch: int = option("--training_step_per_epoch", "--training-step-per-epoch",
                                          type=count_or_all, default=-1, keep=SCHEDULE, help="-1: the whole epoch")
    eval_step_per_epoch: int = option("--eval_step_per_epoch", "--eval-step-per-epoch", type=count_or_all,
                                      default=-1, help="-1: the whole validation set")
    print_freq: int = option("--print-freq", "--print_freq", "-p", type=integer(1), default=10,
                             help="steps per log line")
    skip_steps: int = option("--skip_steps", "--skip-steps", type=integer(0), default=10,
                             help="first steps of each epoch left out of the FPS (default: 10)")
    seed: int = option("--seed", type=integer(0), default=0, keep=SCHEDULE)
    recipe: str | None = option(
        "--recipe", metavar="NAME|list",
        help="set the flags of a published recipe (each still overridable); list: print them with their source and "
             "result")
    resume: str = option(
        "--resume", default=AUTO,
        help="auto (default): the newest readable checkpoint in --output-dir, if any (else a fresh run), so the same "
             "command goes on after a preemption; or a checkpoint file, or a directory of them (one without any is "
             "refused). A resume keeps the checkpoint's schedule, except an --epochs given above its total, which "
             "extends the run: the schedule is then recomputed for the new total from the resumed position (step: "
             "unchanged; cosine, linear: the lr there rises to the longer curve's, said in one line)")
    keep_checkpoints: int = option("--keep-checkpoints", "--keep_checkpoints", type=integer(1), default=3,
                                   help="numbered checkpoints kept, newest first; model_best.pth besides (default: 3)")
    log_samples: bool = option("--log-samples", "--log_samples", action="store_true", default=False,
                               help="write the sample numbers each rank trains on, per step, to "
                                    "samples-rank<R>.jsonl")
    start_epoch: int | None = option("--start-epoch", "--start_epoch", type=integer(0),
                                     help="start the schedule at this epoch")
    evaluate: bool = option(
        "--evaluate", "-e", action="store_true", default=False,
        help="evaluate only the weights of --resume (auto: the newest checkpoint in --output-dir; none is refused), "
             "at the checkpoint's --val-crop-size and --val-size unless given")
    evaluate_untrained: bool = option(
        "--evaluate-untrained", "--evaluate_untrained", action="store_true", default=False,
        help="evaluate randomly initialised weights (a chance-level baseline): --evaluate without any checkpoint")
    eval_freq: int = option("--eval-freq", "--eval_freq", type=integer(1), default=1,
                            help="evaluate every N epochs and at the end")
    stop_step_num: int | None = option(
        "--stop-step-num", "--stop_step_num", "--steps", type=integer(1),
        help="stop (with a checkpoint) once the global step reaches N; --resume goes on from there")
    check_syncs: bool = option(
        "--check-syncs", "--check_syncs", action="store_true", default=False,
        help="raise at a host synchronisation inside any training step past each epoch's --skip_steps "
             "(torch.cuda.set_sync_debug_mode on a GPU): proves the loop never stalls the device; python -m bench "
             "doctor runs it")
    EXTRA_FLAGS: ClassVar[tuple] = (
        Flag.of("--checkpoint-every", "--checkpoint_every", type=_every, metavar="STEPS|Ns|Nm|Nh",
                help="also checkpoint mid-epoch: every STEPS optimizer steps, or every N seconds, minutes or hours "
                     "(default: at the end of each epoch only)"),
    )


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """What is trained, in what precision and memory format."""
    TITLE: ClassVar[str] = "model"
    model: str = option("--model", "--arch", "-a", default="resnet50", keep=MODEL,
                        help="torchvision classification model name")
    num_classes: int | None = option("--num_classes", "--num-classes", type=integer(1), keep=MODEL,
                                     help="default: the dataset's class count")
    amp: str | None = option("--amp", nargs="?", const="fp16", choices=AMP,
                             help="autocast dtype; a bare --amp means fp16 (with a GradScaler) (default: off)")
    loss_scale: float | str | None = option(
        "--loss-scale-value", "--loss_scale_value", type=_loss_scale, metavar="N|dynamic",
        help="fp16 loss scale: a number for a static scale, or dynamic (default: dynamic)")
    channels_last: bool = option("--channels-last", "--channels_last", action="store_true", default=False)
    compile: bool = option("--compile", action="store_true", default=False, help="torch.compile the model")
    EXTRA_FLAGS: ClassVar[tuple] = (
        Flag.of("--pretrained", action="store_true",
                help="start from torchvision's default weights for --model (read from the torch cache, "
                     "$TORCH_HOME/hub/checkpoints; nothing is downloaded), or evaluate them with --evaluate"),
        Flag.of("--opt-level", "--opt_level", choices=OPT_LEVELS,
                help="apex's spelling: O0 = no AMP, O1 and O2 = --amp fp16 (autocast and a GradScaler; torch has no "
                     "O2 mode of fp16 weights with fp32 master weights)"),
    )


@dataclass(frozen=True, kw_only=True)
class OptimOptions:
    """The optimizer (SGD) and its learning-rate schedule."""
    TITLE: ClassVar[str] = "optimizer and schedule"
    lr: float | None = option("--lr", "--learning-rate", type=positive_number, keep=SCHEDULE,
                              help="default: --lr-per-256 x global batch / 256")
    lr_per_256: float = option(
        "--lr-per-256", "--lr_per_256", type=positive_number, default=0.1, keep=SCHEDULE,
        help="the learning rate per 256 images of global batch when --lr is not given (default: 0.1)")
    lr_schedule: str = option("--lr-schedule", "--lr_schedule", choices=SCHEDULES, default="step", keep=SCHEDULE,
                              help="step: x0.1 every 30 epochs (default)")
    warmup_epochs: float = option("--warmup-epochs", "--warmup_epochs", "--warmup", type=number(least=0),
                                  default=0.0, keep=SCHEDULE, help="linear warmup, per step")
    momentum: float = option("--momentum", type=number(least=0, below=1), default=0.9, keep=SCHEDULE)
    weight_decay: float = option("--weight-decay", "--weight_decay", "--wd", type=number(least=0), default=1e-4,
                                 keep=SCHEDULE)
    nesterov: bool = option("--nesterov", action="store_true", default=False, keep=SCHEDULE)
    no_bn_weight_decay: bool = option("--no-bn-weight-decay", "--no_bn_weight_decay", action="store_true",
                                      default=False, keep=SCHEDULE, help="no weight decay on normalisation layers")
    label_smoothing: float = option("--label-smoothing", "--label_smoothing", type=number(least=0, below=1),
                                    default=0.0, keep=SCHEDULE)


@dataclass(frozen=True, kw_only=True)
class MethodOptions:
    """Training methods beside the plain step: progressive resizing, mixing, a weight average, accumulation."""
    TITLE: ClassVar[str] = "training methods"
    min_res: int | None = option(
        "--min-res", "--min_res", type=integer(1), keep=SCHEDULE,
        help="progressive resizing: train at this resolution up to --start-ramp, then grow it linearly to "
             "--crop-size at --end-ramp, rounded to --res-multiple (default: off)")
    start_ramp: int | None = option("--start-ramp", "--start_ramp", type=integer(0), metavar="EPOCH",
                                    keep=SCHEDULE, help="the last epoch at --min-res (counted from 0)")
    end_ramp: int | None = option("--end-ramp", "--end_ramp", type=integer(0), metavar="EPOCH", keep=SCHEDULE,
                                  help="the first epoch at --crop-size")
    res_multiple: int = option("--res-multiple", "--res_multiple", type=integer(1), default=32, keep=SCHEDULE,
                               help="resolutions on the ramp are multiples of this (default: 32, tensor-core "
                                    "friendly)")
    mixup: float = option("--mixup", type=number(least=0), default=0.0, metavar="ALPHA", keep=SCHEDULE,
                          help="mixup with weights from Beta(ALPHA, ALPHA), on the device, with a soft-target loss "
                               "(0: off)")
    cutmix: float = option("--cutmix", type=number(least=0), default=0.0, metavar="ALPHA", keep=SCHEDULE,
                           help="CutMix likewise (0: off)")
    switch_prob: float = option("--switch-prob", "--switch_prob", type=number(least=0, most=1), default=0.5,
                                keep=SCHEDULE,
                                help="with both --mixup and --cutmix, the share of batches CutMix gets (default 0.5)")
    ema: float | None = option("--ema", type=number(above=0, below=1), metavar="DECAY", keep=SCHEDULE,
                               help="also keep an exponential moving average of the weights (decay per step, e.g. "
                                    "0.9999), evaluated and checkpointed beside them")
    ema_every: int = option("--ema-every", "--ema_every", type=integer(1), default=1, metavar="K", keep=SCHEDULE,
                            help="update the average every K steps (with decay**K; default 1)")
    accumulate: int = option("--accumulate", type=integer(1), default=1,
                             help="micro-batches of --batch-size per optimizer step (gradient accumulation): the "
                                  "global batch is batch x world size x accumulate")

    def check_ramp(self, crop_size):
        """Progressive resizing: --min-res with both ramp epochs, in order, the ramp growing to --crop-size."""
        ramp = (self.start_ramp, self.end_ramp)
        if self.min_res is None:
            if ramp != (None, None):
                raise UsageError("--start-ramp and --end-ramp set the ramp of progressive resizing: add --min-res")
            return
        if None in ramp:
            raise UsageError(f"--min-res {self.min_res} needs --start-ramp and --end-ramp, the epochs the ramp from "
                             f"it to --crop-size {crop_size} starts and ends")
        if not 0 <= self.start_ramp <= self.end_ramp:
            raise UsageError(f"--start-ramp {self.start_ramp} --end-ramp {self.end_ramp}: expected 0 <= start <= end")
        if self.min_res > crop_size:
            raise UsageError(f"--min-res {self.min_res} is above --crop-size {crop_size}, where the ramp ends")


@dataclass(frozen=True, kw_only=True)
class DistOptions:
    """The processes and their devices: pytorch/examples' flags; under torchrun or torch.distributed.launch none is
    needed."""
    TITLE: ClassVar[str] = ("distributed (pytorch/examples' flags; under torchrun or torch.distributed.launch none is "
                            "needed)")
    device: str | None = option("--device", help="cuda, cuda:N or cpu (default: cuda when available)")
    multiprocessing_distributed: bool = option(
        "--multiprocessing-distributed", "--multiprocessing_distributed", action="store_true", default=False,
        help="spawn one process per device of this node (--device-list): world size = devices per node x nodes "
             "(--world-size), rank = node rank (--rank) x devices per node + local index; --batch-size and "
             "--workers are then per node, divided among its processes")
    world_size: int | None = option(
        "--world-size", "--world_size", type=integer(1), default=-1,
        help="with --multiprocessing-distributed the number of nodes, else the number of processes (default: 1 "
             "node, or the launcher's WORLD_SIZE)")
    rank: int | None = option(
        "--rank", type=integer(-1), default=-1,
        help="with --multiprocessing-distributed this node's rank, else this process's rank (default: node 0, or "
             "the launcher's RANK)")
    dist_backend: str | None = option("--dist-backend", "--dist_backend", type=_backend,
                                      help="nccl or gloo (default: nccl on CUDA, gloo on CPU)")
    device_list: tuple | None = option(
        "--device-list", "--device_list", type=_device_list,
        help="devices to spawn onto with --multiprocessing-distributed, e.g. 0,1,2,3 (default: every visible GPU); "
             "on --device cpu the number of CPU processes")
    local_rank: int | None = option("--local_rank", "--local-rank", type=int,
                                    help="set by torch.distributed.launch")
    EXTRA_FLAGS: ClassVar[tuple] = (
        Flag.of("--dist-url", "--dist_url", type=_dist_url,
                help="where the processes meet: tcp://HOST:PORT, file://PATH or env:// (default: env:// under a "
                     "launcher, tcp://--addr:$MASTER_PORT with --addr, a free local port on one node)"),
        Flag.of("--addr", help="master address (node 0): the same as --dist-url tcp://ADDR:$MASTER_PORT "
                               "(MASTER_PORT default 29500)"),
        Flag.of("--gpu", type=integer(0), help="use this one GPU: the same as --device cuda:N"),
    )
