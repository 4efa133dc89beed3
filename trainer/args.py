"""Command line of `python -m trainer`: the ResNet-50 guide's flags as spelled there, the VGG16 guide's (pytorch/
examples' imagenet/main.py as Ascend ModelZoo adapted it), and the recipe knobs (optimizer, schedule, AMP). User
errors are one line on stderr and exit status 2. The parsed Namespace stays here: parse_args checks it and resolves
every default into the RunConfig the rest of the trainer reads."""
import argparse
import dataclasses
import math
import os
import urllib.parse
from pathlib import Path

import pipeline
from common.cli import Parser, count_or_all, integer, number, output_problem, positive_number
from common.errors import UsageError
from common.layout import LISTS, has_manifest
from common.store import is_url
from pipeline import crops
from prep import sources
from trainer import checkpoint, placement, weights
from trainer.config import AMP_DTYPES, RunConfig
from trainer.distributed import BACKENDS
from trainer.model import check_train_crop, classification_models
from trainer.recipes import BY_NAME, LIST, table

SCHEDULES = ("step", "cosine", "linear")
# apex's optimisation levels as torch autocast: O1 and O2 both train fp16 with a GradScaler, since torch has no
# "fp16 model with fp32 master weights" mode (apex's O2).
OPT_LEVELS = {"O0": "off", "O1": "fp16", "O2": "fp16"}
DEFAULT_DATA = "shards"
BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
              "GIB": 2**30, "TIB": 2**40}
AUTO = "auto"  # --resume's default
SECONDS_PER = {"s": 1, "m": 60, "h": 3600}
# make_loader's keywords as this command line spells them, for the rules pipeline.check_order keeps
DATA_FLAGS = pipeline.Spelling({"order": "--shuffle", "window": "--shuffle-window", "cache_dir": "--cache-dir",
                                "cache_limit": "--cache-limit", "crop_scale": "--crop-scale",
                                "crop_ratio": "--crop-ratio"})
RAW = "ILSVRC2012"  # the folder of the downloaded archives, as the guides name it


def build_parser(raises=False):
    """The command line's parser; `raises`: its errors are UsageErrors, not a line on stderr and exit 2."""
    p = Parser("trainer", raises=raises, prog="python -m trainer",
               description="Train a torchvision classifier on ImageNet shards: one process, DDP under torchrun or "
                           "torch.distributed.launch, or one process per device with --multiprocessing-distributed.")
    p.add_argument("data", nargs="?", help="same as --data-path (the pytorch/examples positional form)")

    run = p.add_argument_group("run (the ResNet-50 guide's flags)")
    run.add_argument("--data-path", "--data_path", "--data",
                     help=f"prep output dir (manifest.json) or DeepLearningExamples layout (default: {DEFAULT_DATA}, "
                          f"where `{_prep_command()}` writes it); or its URL: s3://, "
                          "gs://, https:// (read through --cache-dir)")
    run.add_argument("--cache-dir", "--cache_dir",
                     help="node-local cache of a URL's shards, shared by the node's ranks (default: under "
                          "~/.cache/imagenet-feed)")
    run.add_argument("--cache-limit", "--cache_limit", type=_bytes, metavar="SIZE",
                     help="most bytes the cache holds, e.g. 20GB (needed with a URL)")
    run.add_argument("--data-timeout", "--data_timeout", type=positive_number, default=pipeline.DATA_TIMEOUT_S,
                     metavar="SECONDS",
                     help="longest wait for data (a shard's download, room in the cache, a loader worker's batch, "
                          "another rank); past it every rank stops with one line saying what it waited for "
                          f"(default: {pipeline.DATA_TIMEOUT_S:g})")
    run.add_argument("--shuffle", dest="order", choices=pipeline.ORDERS, default=None,
                     help="global: one permutation of the split per epoch (default for local data); shard-window: "
                          "shards permuted, samples shuffled within windows of --shuffle-window shards, so a "
                          "bounded cache suffices (default, and the only choice, for a URL)")
    run.add_argument("--shuffle-window", "--shuffle_window", dest="window", type=integer(1), metavar="SHARDS",
                     help="shards per shuffle window (default: what --cache-limit holds three times over)")
    run.add_argument("--output-dir", "--output_dir", default="runs",
                     help="report.json, logs, checkpoints (default: runs)")
    run.add_argument("--model", "--arch", "-a", default="resnet50", help="torchvision classification model name")
    run.add_argument("--num_classes", "--num-classes", type=integer(1), help="default: the dataset's class count")
    run.add_argument("--pretrained", action="store_true",
                     help="start from torchvision's default weights for --model (read from the torch cache, "
                          "$TORCH_HOME/hub/checkpoints; nothing is downloaded), or evaluate them with --evaluate")
    run.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available)")
    run.add_argument("--batch-size", "--batch_size", "-b", type=integer(1), default=256,
                     help="per process; with --multiprocessing-distributed per node, divided among its processes "
                          "(default: 256)")
    run.add_argument("--epochs", type=integer(1), default=90)
    run.add_argument("--training_step_per_epoch", "--training-step-per-epoch", type=count_or_all, default=-1,
                     help="-1: the whole epoch")
    run.add_argument("--eval_step_per_epoch", "--eval-step-per-epoch", type=count_or_all, default=-1,
                     help="-1: the whole validation set")
    run.add_argument("--workers", "-j", type=integer(1),
                     help="loader workers per process, at most the cores it may use; with "
                          "--multiprocessing-distributed per node, divided among its processes (default: the cores "
                          "shared by the processes of this node)")
    run.add_argument("--print-freq", "--print_freq", "-p", type=integer(1), default=10, help="steps per log line")
    run.add_argument("--skip_steps", "--skip-steps", type=integer(0), default=10,
                     help="first steps of each epoch left out of the FPS (default: 10)")
    run.add_argument("--loader", choices=pipeline.BACKENDS,
                     help=f"default: the first of {', '.join(b.name for b in pipeline.BACKEND_TABLE if b.default)} "
                          f"that can run here (a GPU, DALI); {pipeline.CEILING} needs no data")
    run.add_argument("--crop-size", "--crop_size", "--max-res", "--max_res", type=integer(1), default=224,
                     help="training crop (with --min-res, the largest of the ramp) (default: 224)")
    run.add_argument("--val-size", "--val_size", type=integer(1), default=256,
                     help="validation resize before the centre crop")
    run.add_argument("--val-crop-size", "--val_crop_size", "--val-res", type=integer(1),
                     help="validation centre crop, independent of the training crop: test-time resolution (FFCV "
                          "trains at 192 and validates at 256) (default: --crop-size)")

    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--recipe", metavar="NAME|list",
                        help="set the flags of a published recipe (each still overridable); list: print them with "
                             "their source and result")
    recipe.add_argument("--lr", "--learning-rate", type=positive_number,
                        help="default: --lr-per-256 x global batch / 256")
    recipe.add_argument("--lr-per-256", "--lr_per_256", type=positive_number, default=0.1,
                        help="the learning rate per 256 images of global batch when --lr is not given (default: 0.1)")
    recipe.add_argument("--lr-schedule", "--lr_schedule", choices=SCHEDULES, default="step",
                        help="step: x0.1 every 30 epochs (default)")
    recipe.add_argument("--warmup-epochs", "--warmup_epochs", "--warmup", type=number(least=0), default=0.0,
                        help="linear warmup, per step")
    recipe.add_argument("--momentum", type=number(least=0, below=1), default=0.9)
    recipe.add_argument("--weight-decay", "--weight_decay", "--wd", type=number(least=0), default=1e-4)
    recipe.add_argument("--nesterov", action="store_true")
    recipe.add_argument("--no-bn-weight-decay", "--no_bn_weight_decay", action="store_true",
                        help="no weight decay on normalisation layers")
    recipe.add_argument("--label-smoothing", "--label_smoothing", type=number(least=0, below=1), default=0.0)
    recipe.add_argument("--crop-scale", "--crop_scale", type=float, nargs=2, default=crops.SCALE,
                        metavar=("MIN", "MAX"), help="RandomResizedCrop's share of the image area (default: 0.08 1)")
    recipe.add_argument("--crop-ratio", "--crop_ratio", type=float, nargs=2, default=crops.RATIO,
                        metavar=("MIN", "MAX"), help="RandomResizedCrop's aspect ratios (default: 3/4 4/3)")
    recipe.add_argument("--min-res", "--min_res", type=integer(1),
                        help="progressive resizing: train at this resolution up to --start-ramp, then grow it "
                             "linearly to --crop-size at --end-ramp, rounded to --res-multiple (default: off)")
    recipe.add_argument("--start-ramp", "--start_ramp", type=integer(0), metavar="EPOCH",
                        help="the last epoch at --min-res (counted from 0)")
    recipe.add_argument("--end-ramp", "--end_ramp", type=integer(0), metavar="EPOCH",
                        help="the first epoch at --crop-size")
    recipe.add_argument("--res-multiple", "--res_multiple", type=integer(1), default=32,
                        help="resolutions on the ramp are multiples of this (default: 32, tensor-core friendly)")
    recipe.add_argument("--mixup", type=number(least=0), default=0.0, metavar="ALPHA",
                        help="mixup with weights from Beta(ALPHA, ALPHA), on the device, with a soft-target loss "
                             "(0: off)")
    recipe.add_argument("--cutmix", type=number(least=0), default=0.0, metavar="ALPHA",
                        help="CutMix likewise (0: off)")
    recipe.add_argument("--switch-prob", "--switch_prob", type=number(least=0, most=1), default=0.5,
                        help="with both --mixup and --cutmix, the share of batches CutMix gets (default 0.5)")
    recipe.add_argument("--ema", type=number(above=0, below=1), metavar="DECAY",
                        help="also keep an exponential moving average of the weights (decay per step, e.g. 0.9999), "
                             "evaluated and checkpointed beside them")
    recipe.add_argument("--ema-every", "--ema_every", type=integer(1), default=1, metavar="K",
                        help="update the average every K steps (with decay**K; default 1)")
    recipe.add_argument("--amp", nargs="?", const="fp16", choices=tuple(AMP_DTYPES),
                        help="autocast dtype; a bare --amp means fp16 (with a GradScaler) (default: off)")
    recipe.add_argument("--opt-level", "--opt_level", choices=OPT_LEVELS,
                        help="apex's spelling: O0 = no AMP, O1 and O2 = --amp fp16 (autocast and a GradScaler; torch "
                             "has no O2 mode of fp16 weights with fp32 master weights)")
    recipe.add_argument("--loss-scale-value", "--loss_scale_value", dest="loss_scale", type=_loss_scale,
                        metavar="N|dynamic",
                        help="fp16 loss scale: a number for a static scale, or dynamic (default: dynamic)")
    recipe.add_argument("--channels-last", "--channels_last", action="store_true")
    recipe.add_argument("--compile", action="store_true", help="torch.compile the model")
    recipe.add_argument("--seed", type=integer(0), default=0)

    control = p.add_argument_group("control")
    control.add_argument("--resume", default=AUTO,
                         help="auto (default): the newest readable checkpoint in --output-dir, if any (else a fresh "
                              "run), so the same command goes on after a preemption; or a checkpoint file, or a "
                              "directory of them (one without any is refused). A resume keeps the checkpoint's "
                              "schedule, except an --epochs given above its total, which extends the run: the "
                              "schedule is then recomputed for the new total from the resumed position (step: "
                              "unchanged; cosine, linear: the lr there rises to the longer curve's, said in one line)")
    control.add_argument("--checkpoint-every", "--checkpoint_every", type=_every, metavar="STEPS|Ns|Nm|Nh",
                         help="also checkpoint mid-epoch: every STEPS optimizer steps, or every N seconds, minutes or "
                              "hours (default: at the end of each epoch only)")
    control.add_argument("--keep-checkpoints", "--keep_checkpoints", type=integer(1), default=3,
                         help="numbered checkpoints kept, newest first; model_best.pth besides (default: 3)")
    control.add_argument("--accumulate", type=integer(1), default=1,
                         help="micro-batches of --batch-size per optimizer step (gradient accumulation): the global "
                              "batch is batch x world size x accumulate")
    control.add_argument("--log-samples", "--log_samples", action="store_true",
                         help="write the sample numbers each rank trains on, per step, to samples-rank<R>.jsonl")
    control.add_argument("--start-epoch", "--start_epoch", type=integer(0), help="start the schedule at this epoch")
    control.add_argument("--evaluate", "-e", action="store_true",
                         help="evaluate only the weights of --resume (auto: the newest checkpoint in --output-dir; "
                              "none is refused), at the checkpoint's --val-crop-size and --val-size unless given")
    control.add_argument("--evaluate-untrained", "--evaluate_untrained", action="store_true",
                         help="evaluate randomly initialised weights (a chance-level baseline): --evaluate without "
                              "any checkpoint")
    control.add_argument("--eval-freq", "--eval_freq", type=integer(1), default=1,
                         help="evaluate every N epochs and at the end")
    control.add_argument("--stop-step-num", "--stop_step_num", "--steps", type=integer(1),
                         help="stop (with a checkpoint) once the global step reaches N; --resume goes on from there")
    control.add_argument("--check-syncs", "--check_syncs", action="store_true",
                         help="raise at a host synchronisation inside any training step past each epoch's "
                              "--skip_steps (torch.cuda.set_sync_debug_mode on a GPU): proves the loop never "
                              "stalls the device; python -m bench doctor runs it")

    group = p.add_argument_group(
        "distributed (pytorch/examples' flags; under torchrun or torch.distributed.launch none is needed)")
    group.add_argument("--multiprocessing-distributed", "--multiprocessing_distributed", action="store_true",
                       help="spawn one process per device of this node (--device-list): world size = devices per "
                            "node x nodes (--world-size), rank = node rank (--rank) x devices per node + local index; "
                            "--batch-size and --workers are then per node, divided among its processes")
    group.add_argument("--world-size", "--world_size", type=integer(1), default=-1,
                       help="with --multiprocessing-distributed the number of nodes, else the number of processes "
                            "(default: 1 node, or the launcher's WORLD_SIZE)")
    group.add_argument("--rank", type=integer(-1), default=-1,
                       help="with --multiprocessing-distributed this node's rank, else this process's rank "
                            "(default: node 0, or the launcher's RANK)")
    group.add_argument("--dist-url", "--dist_url", type=_dist_url,
                       help="where the processes meet: tcp://HOST:PORT, file://PATH or env:// (default: env:// "
                            "under a launcher, tcp://--addr:$MASTER_PORT with --addr, a free local port on one node)")
    group.add_argument("--addr", help="master address (node 0): the same as --dist-url tcp://ADDR:$MASTER_PORT "
                                      "(MASTER_PORT default 29500)")
    group.add_argument("--dist-backend", "--dist_backend", type=_backend,
                       help="nccl or gloo (default: nccl on CUDA, gloo on CPU)")
    group.add_argument("--gpu", type=integer(0), help="use this one GPU: the same as --device cuda:N")
    group.add_argument("--device-list", "--device_list", type=_device_list,
                       help="devices to spawn onto with --multiprocessing-distributed, e.g. 0,1,2,3 (default: every "
                            "visible GPU); on --device cpu the number of CPU processes")
    group.add_argument("--local_rank", "--local-rank", type=int, help="set by torch.distributed.launch")
    return p


def parse_args(argv=None):
    """The run's RunConfig, every flag checked and its default resolved; a bad one is one line on stderr, exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe == LIST:
        print(table(), flush=True)
        parser.exit(0)
    try:
        return _resolved(parser, args, argv)
    except (UsageError, pipeline.MissingDependency) as error:
        parser.error(str(error))


def _resolved(parser, args, argv):
    """The RunConfig of the parsed `args`, a recipe's values under what `argv` gave."""
    if args.recipe:
        if args.recipe not in BY_NAME:
            raise UsageError(f"unknown --recipe {args.recipe!r}; `--recipe list` shows them")
        parser.set_defaults(**BY_NAME[args.recipe].flags)
        args = parser.parse_args(argv)
    return _config(args, given=_typed(argv))


def configure(**settings):
    """The RunConfig of the command line that gives `settings`, named as the flags' dests (batch_size=8,
    channels_last=True, crop_scale=(0.35, 1)), each checked as parse_args checks it: a program's way to start a run
    (trainer.run). A setting no flag has is a TypeError at once, so a renamed flag breaks its callers loudly; a value
    that cannot be, a UsageError."""
    argv = as_argv(settings)
    parser = build_parser(raises=True)
    return _resolved(parser, parser.parse_args(argv), argv)


def as_argv(settings):
    """The command line giving `settings` (flag dests and values), in each flag's first spelling."""
    actions = {action.dest: action for action in build_parser()._actions if action.option_strings}
    unknown = sorted(set(settings) - set(actions))
    if unknown:
        raise TypeError(f"no trainer flag sets {', '.join(unknown)}")
    argv = []
    for dest, value in settings.items():
        flag = actions[dest].option_strings[0]
        if actions[dest].nargs == 0:  # a switch
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, *map(str, value if isinstance(value, (tuple, list)) else [value])]
    return argv


def _typed(argv):
    """The settings the command line gave (their dests), whatever their values: a flag typed with its default value
    is given, a recipe's value or a default is not."""
    parser = build_parser()
    for action in parser._actions:  # every default left out: what remains in the Namespace was typed
        action.default = argparse.SUPPRESS
    return tuple(sorted(vars(parser.parse_args(argv))))


def default(name):
    """The parser's default for the setting `name` (what a flag left out gives)."""
    return build_parser().get_default(name)


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


def _config(args, given=()):
    """The Namespace checked and resolved into a RunConfig; each step raises UsageError naming the flag, in the order
    the steps run (values, precision, device, processes, workers, resume, data)."""
    _check_values(args)
    settled = _precision(args)
    settled.update(placement.place(args))
    settled.update(_resume(args), given=given)
    settled["checkpoint_every_steps"], settled["checkpoint_every_seconds"] = args.checkpoint_every or (None, None)
    settled.update(_data(args, settled["device"]))
    settled.update(crop_scale=tuple(args.crop_scale), crop_ratio=tuple(args.crop_ratio),
                   val_crop_size=args.val_crop_size or args.crop_size)
    as_given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if f.name not in settled}
    return RunConfig(**as_given, **settled)


def _check_values(args):
    models = classification_models()
    if args.model not in models:
        raise UsageError(f"unknown --model {args.model!r}; choose from: {', '.join(models)}")
    if not (args.evaluate or args.evaluate_untrained):
        check_train_crop(args.model, args.crop_size if args.min_res is None else min(args.min_res, args.crop_size))
    val_crop = args.val_crop_size or args.crop_size
    if args.val_size < val_crop:
        raise UsageError(f"--val-size {args.val_size} is below the validation crop {val_crop} (--val-crop-size, else "
                         "--crop-size): validation resizes the shorter side to --val-size, then takes that centre "
                         "crop of it")
    for keyword, most in (("crop_scale", 1), ("crop_ratio", math.inf)):
        pipeline.check_pair(keyword, getattr(args, keyword), most, DATA_FLAGS)
    _check_ramp(args)
    problem = output_problem(args.output_dir)
    if problem:
        raise UsageError(f"--output-dir {args.output_dir} {problem}")


def _check_ramp(args):
    """Progressive resizing: --min-res with both ramp epochs, in order, the ramp growing to --crop-size."""
    ramp = (args.start_ramp, args.end_ramp)
    if args.min_res is None:
        if ramp != (None, None):
            raise UsageError("--start-ramp and --end-ramp set the ramp of progressive resizing: add --min-res")
        return
    if None in ramp:
        raise UsageError(f"--min-res {args.min_res} needs --start-ramp and --end-ramp, the epochs the ramp from it "
                         f"to --crop-size {args.crop_size} starts and ends")
    if not 0 <= args.start_ramp <= args.end_ramp:
        raise UsageError(f"--start-ramp {args.start_ramp} --end-ramp {args.end_ramp}: expected 0 <= start <= end")
    if args.min_res > args.crop_size:
        raise UsageError(f"--min-res {args.min_res} is above --crop-size {args.crop_size}, where the ramp ends")


def _precision(args):
    """amp and loss_scale: --opt-level is apex's spelling of --amp, and the two must agree; the loss scale is a float,
    or None for dynamic."""
    amp = args.amp
    if args.opt_level:
        implied = OPT_LEVELS[args.opt_level]
        if amp not in (None, implied):
            raise UsageError(f"--opt-level {args.opt_level} means --amp {implied}, not --amp {amp}")
        amp = implied
    amp = amp or "off"
    if args.loss_scale is not None and amp != "fp16":
        raise UsageError("--loss-scale-value needs fp16 AMP (--amp fp16 or --opt-level O1/O2), "
                         f"this run has --amp {amp}")
    return {"amp": amp, "loss_scale": None if args.loss_scale == "dynamic" else args.loss_scale}


def _data(args, device):
    """data_path (--data-path, --data or the positional form, else shards/) and loader (default: dali on a GPU with
    DALI, else cpu), checked against the device and the disk."""
    data_path = args.data_path or args.data or DEFAULT_DATA
    cuda = device.startswith("cuda")
    loader = args.loader or pipeline.default_backend(cuda)
    try:
        pipeline.require(loader, cuda=cuda)
    except ValueError as error:
        raise UsageError(f"--loader {loader} {error} (--device {device})") from None
    reads_data = pipeline.backend(loader).reads_data
    remote = is_url(data_path)
    if reads_data and not remote:
        _check_prepared(Path(data_path))
    order = pipeline.check_order(data_path, loader, args.order, args.window, args.cache_dir, args.cache_limit,
                                 DATA_FLAGS)
    return {"data_path": data_path, "loader": loader, "order": order}


def _prep_command(src=RAW, out=DEFAULT_DATA + "/"):
    return f"python -m prep.imagenet --src {src} --out {out}"


def _check_prepared(path):
    """A local --data-path is prep's output (or the DeepLearningExamples folders); what prep reads instead (the
    archives, an extracted tree, an archive file) is named as such, with the command that prepares it."""
    if path.is_file():
        raise UsageError(f"--data-path {path} is a file; the trainer reads prepared data: give the folder holding the "
                         f"ILSVRC2012 archives to `{_prep_command(path.parent)}`, then "
                         f"--data-path {DEFAULT_DATA}/")
    if not path.is_dir():
        raise UsageError(f"--data-path {path}: no such directory; make it with "
                         f"`{_prep_command(out=os.path.join(path, ''))}` (or --loader {pipeline.CEILING})")
    if has_manifest(path) or any((path / name).is_file() for name in LISTS.values()):
        return
    raw = next((layout for layout in sources.LAYOUTS if layout.recognises(path)), None)
    if raw is not None:
        raise UsageError(f"--data-path {path} holds {raw.looks_like}, what prep reads, not prepared data: "
                         f"`{_prep_command(path)}`, then --data-path {DEFAULT_DATA}/")


def _bytes(text):
    """--cache-limit: a size such as 20GB, 512MiB or 1000000 (bytes)."""
    number = text.rstrip("BbIiKkMmGgTt")
    unit = BYTE_UNITS.get(text[len(number):].upper())
    try:
        value = float(number) * unit if unit else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a size such as 20GB, 512MiB or a number of bytes, got {text!r}")
    return int(value)


def _resume(args):
    """resume (auto, or the checkpoint file or directory named), evaluate and start_weights (--pretrained's file):
    --evaluate-untrained is an evaluation that reads no checkpoint, so it names none."""
    if args.evaluate_untrained and args.resume != AUTO:
        raise UsageError(f"--evaluate-untrained evaluates randomly initialised weights: drop it to evaluate "
                         f"--resume {args.resume}")
    if args.pretrained and (args.resume != AUTO or args.evaluate_untrained):
        other = f"--resume {args.resume}" if args.resume != AUTO else "--evaluate-untrained"
        raise UsageError(f"--pretrained starts from torchvision's weights, {other} from others: give one of them")
    resume = args.resume if args.resume == AUTO else _checkpoint_path(args.resume)
    return {"resume": resume, "evaluate": args.evaluate or args.evaluate_untrained,
            "evaluate_untrained": args.evaluate_untrained,
            "start_weights": weights.published(args.model, args.num_classes) if args.pretrained else None}


def _checkpoint_path(path):
    if not Path(path).exists():
        raise UsageError(f"--resume {path}: no such checkpoint file or directory")
    if Path(path).is_dir() and not checkpoint.candidates(path):
        raise UsageError(f"--resume {path}: a directory with no checkpoint in it (checkpoint-*.pth, checkpoint.pth); "
                         "name one that has, or leave --resume out (auto) for the newest in --output-dir, if any, "
                         "else a fresh run")
    return os.fspath(path)


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
