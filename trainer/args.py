"""Command line of `python -m trainer`: the ResNet-50 guide's flags as spelled there, the VGG16 guide's aliases,
and the recipe knobs (optimizer, schedule, AMP). User errors are one line on stderr and exit status 2."""
import argparse
import os
from pathlib import Path

import torch

import pipeline
from trainer.model import classification_models

SCHEDULES = ("step", "cosine", "linear")
AMP = ("off", "fp16", "bf16")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"trainer: {message}\n")


def build_parser():
    p = Parser(prog="python -m trainer", description="Train a torchvision classifier on ImageNet shards (DDP via torchrun).")
    p.add_argument("data", nargs="?", help="same as --data-path (the DeepLearningExamples positional form)")

    run = p.add_argument_group("run (the ResNet-50 guide's flags)")
    run.add_argument("--data-path", "--data_path", help="prep output dir (manifest.json) or DeepLearningExamples layout")
    run.add_argument("--output-dir", "--output_dir", default="runs", help="report.json, logs, checkpoints (default: runs)")
    run.add_argument("--model", "--arch", "-a", default="resnet50", help="torchvision classification model name")
    run.add_argument("--num_classes", "--num-classes", type=int, help="default: the dataset's class count")
    run.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available)")
    run.add_argument("--batch-size", "--batch_size", "-b", type=int, default=256, help="per device (default: 256)")
    run.add_argument("--epochs", type=int, default=90)
    run.add_argument("--training_step_per_epoch", "--training-step-per-epoch", type=int, default=-1,
                     help="-1: the whole epoch")
    run.add_argument("--eval_step_per_epoch", "--eval-step-per-epoch", type=int, default=-1,
                     help="-1: the whole validation set")
    run.add_argument("--workers", "-j", type=int, help="loader workers per process (default: cores / local ranks)")
    run.add_argument("--print-freq", "--print_freq", "-p", type=int, default=10, help="steps per log line")
    run.add_argument("--skip_steps", "--skip-steps", type=int, default=10,
                     help="first steps of each epoch left out of the FPS (default: 10)")
    run.add_argument("--loader", choices=pipeline.BACKENDS, help="default: dali on a GPU with DALI, else cpu")
    run.add_argument("--crop-size", "--crop_size", type=int, default=224)
    run.add_argument("--val-size", "--val_size", type=int, default=256, help="validation resize before the centre crop")

    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--lr", "--learning-rate", type=float, help="default: 0.1 x global batch / 256")
    recipe.add_argument("--lr-schedule", "--lr_schedule", choices=SCHEDULES, default="step",
                        help="step: x0.1 every 30 epochs (default)")
    recipe.add_argument("--warmup-epochs", "--warmup_epochs", "--warmup", type=float, default=0.0,
                        help="linear warmup, per step")
    recipe.add_argument("--momentum", type=float, default=0.9)
    recipe.add_argument("--weight-decay", "--weight_decay", "--wd", type=float, default=1e-4)
    recipe.add_argument("--nesterov", action="store_true")
    recipe.add_argument("--no-bn-weight-decay", "--no_bn_weight_decay", action="store_true",
                        help="no weight decay on normalisation layers")
    recipe.add_argument("--label-smoothing", "--label_smoothing", type=float, default=0.0)
    recipe.add_argument("--amp", nargs="?", const="fp16", default="off", choices=AMP,
                        help="autocast dtype; a bare --amp means fp16 (with a GradScaler)")
    recipe.add_argument("--channels-last", "--channels_last", action="store_true")
    recipe.add_argument("--compile", action="store_true", help="torch.compile the model")
    recipe.add_argument("--seed", type=int, default=0)

    control = p.add_argument_group("control")
    control.add_argument("--resume", help="checkpoint file (or an output dir holding checkpoint.pth)")
    control.add_argument("--start-epoch", "--start_epoch", type=int, help="start the schedule at this epoch")
    control.add_argument("--evaluate", "-e", action="store_true", help="evaluate only (weights from --resume)")
    control.add_argument("--eval-freq", "--eval_freq", type=int, default=1, help="evaluate every N epochs and at the end")
    control.add_argument("--stop-step-num", "--stop_step_num", "--steps", type=int,
                         help="stop (with a checkpoint) once the global step reaches N; --resume goes on from there")
    control.add_argument("--local_rank", "--local-rank", type=int, help="set by torch.distributed.launch")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data_path = args.data_path or args.data
    try:
        _check(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def _check(args):
    models = classification_models()
    if args.model not in models:
        raise ValueError(f"unknown --model {args.model!r}; choose from: {', '.join(models)}")
    positive = {"--batch-size": args.batch_size, "--epochs": args.epochs, "--print-freq": args.print_freq,
                "--eval-freq": args.eval_freq, "--crop-size": args.crop_size, "--val-size": args.val_size}
    optional = {"--num_classes": args.num_classes, "--stop-step-num": args.stop_step_num, "--workers": args.workers}
    positive.update((flag, value) for flag, value in optional.items() if value is not None)
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} must be positive, got {value}")
    for flag, value in (("--training_step_per_epoch", args.training_step_per_epoch),
                        ("--eval_step_per_epoch", args.eval_step_per_epoch)):
        if value == 0 or value < -1:
            raise ValueError(f"{flag} must be positive or -1 (whole epoch), got {value}")
    if args.skip_steps < 0 or args.warmup_epochs < 0 or args.start_epoch is not None and args.start_epoch < 0:
        raise ValueError("--skip_steps, --warmup-epochs and --start-epoch must not be negative")
    args.device = _device(args.device)
    if args.loader is None:
        args.loader = _default_loader(args)
    if args.loader != "synthetic":
        if not args.data_path:
            raise ValueError(f"--data-path is required with --loader {args.loader}")
        if not Path(args.data_path).is_dir():
            raise ValueError(f"--data-path {args.data_path}: no such directory")
    if args.resume:
        args.resume = _checkpoint_file(args.resume)


def _device(name):
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected cuda, cuda:N or cpu") from None
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"--device {name!r}: expected cuda, cuda:N or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def _default_loader(args):
    if not args.data_path:
        return "synthetic"
    cuda = args.device.startswith("cuda")
    return "dali" if "dali" in pipeline.available_backends(cuda) else "cpu"


def _checkpoint_file(path):
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pth"
    if not path.is_file():
        raise ValueError(f"--resume {path}: no such checkpoint file")
    return os.fspath(path)
