"""Command line of `python -m trainer`, generated from the option groups (trainer/options.py and the pipeline's
DataOptions: the ResNet-50 guide's flags as spelled there, the VGG16 guide's, the recipes'). User errors are one line
on stderr and exit status 2. The parsed Namespace stays here: parse_args checks what crosses groups (a recipe, the
precision, the placement, the resume, the data) and resolves every default into the RunConfig the rest of the
trainer reads."""
import argparse
import dataclasses
import os
from pathlib import Path

import pipeline
from common.cli import Parser, output_problem
from common.errors import UsageError
from common.layout import LISTS, has_manifest
from common.options import add_group, flag_fields, subset, values
from common.store import is_url
from pipeline.options import DataOptions
from prep import sources
from trainer import checkpoint, placement, weights
from trainer.config import GROUPS, RunConfig
from trainer.model import check_train_crop, classification_models
from trainer.options import AUTO, DEFAULT_DATA, OPT_LEVELS, MethodOptions, prep_command
from trainer.recipes import BY_NAME, LIST, table


def build_parser(raises=False):
    """The command line's parser, a group per option group (RunConfig's); `raises`: its errors are UsageErrors, not a
    line on stderr and exit 2."""
    p = Parser("trainer", raises=raises, prog="python -m trainer",
               description="Train a torchvision classifier on ImageNet shards: one process, DDP under torchrun or "
                           "torch.distributed.launch, or one process per device with --multiprocessing-distributed.")
    p.add_argument("data", nargs="?", help="same as --data-path (the pytorch/examples positional form)")
    for group in GROUPS:
        add_group(p, group)
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


def _config(args, given=()):
    """The Namespace checked and resolved into a RunConfig; each step raises UsageError naming the flag, in the order
    the steps run (values, precision, device, processes, workers, resume, data)."""
    _check_values(args)
    settled = _precision(args)
    settled.update(placement.place(args))
    settled.update(_resume(args), given=given, data_path=args.data_path or args.data or DEFAULT_DATA)
    settled["checkpoint_every_steps"], settled["checkpoint_every_seconds"] = args.checkpoint_every or (None, None)
    as_given = {f.name: getattr(args, f.name) for f in flag_fields(RunConfig) if f.name not in settled}
    return _data(RunConfig(**as_given, **settled))


def _check_values(args):
    models = classification_models()
    if args.model not in models:
        raise UsageError(f"unknown --model {args.model!r}; choose from: {', '.join(models)}")
    if not (args.evaluate or args.evaluate_untrained):
        check_train_crop(args.model, args.crop_size if args.min_res is None else min(args.min_res, args.crop_size))
    subset(MethodOptions, args).check_ramp(args.crop_size)
    problem = output_problem(args.output_dir)
    if problem:
        raise UsageError(f"--output-dir {args.output_dir} {problem}")


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


def _data(config):
    """The config with its data options checked and resolved (pipeline.DataOptions.validate: the loader's default
    for the device, the order, the crops), and a local data path checked for what prep writes."""
    data = subset(DataOptions, config).validate(config.data_path, cuda=config.device.startswith("cuda"))
    if pipeline.backend(data.loader).reads_data and not is_url(config.data_path):
        _check_prepared(Path(config.data_path))
    return dataclasses.replace(config, **values(DataOptions, data))


def _check_prepared(path):
    """A local --data-path is prep's output (or the DeepLearningExamples folders); what prep reads instead (the
    archives, an extracted tree, an archive file) is named as such, with the command that prepares it."""
    if path.is_file():
        raise UsageError(f"--data-path {path} is a file; the trainer reads prepared data: give the folder holding the "
                         f"ILSVRC2012 archives to `{prep_command(path.parent)}`, then "
                         f"--data-path {DEFAULT_DATA}/")
    if not path.is_dir():
        raise UsageError(f"--data-path {path}: no such directory; make it with "
                         f"`{prep_command(out=os.path.join(path, ''))}` (or --loader {pipeline.CEILING})")
    if has_manifest(path) or any((path / name).is_file() for name in LISTS.values()):
        return
    raw = next((layout for layout in sources.LAYOUTS if layout.recognises(path)), None)
    if raw is not None:
        raise UsageError(f"--data-path {path} holds {raw.looks_like}, what prep reads, not prepared data: "
                         f"`{prep_command(path)}`, then --data-path {DEFAULT_DATA}/")


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


