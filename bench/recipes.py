"""`python -m bench recipes`: accuracy and wall time of a fixed-resolution run against the same run with
progressive resizing, and with progressive resizing and an EMA of the weights; same epochs, same seed.

    python -m bench recipes [--data-path SHARDS] [--model M] [--epochs N] [--crop-size R] [--min-res r] ...

Three runs of the real trainer (trainer.fit.main, in this process), one after the other, on the same model, data,
loader, epochs, seed, batch and learning rate schedule (--lr, 1 warmup epoch, cosine):
- fixed: every epoch at --crop-size;
- progressive: --min-res up to --start-ramp, then growing to --crop-size at --end-ramp in multiples of
  --res-multiple (FFCV's schedule, trainer/resolution.py);
- progressive+ema: the same, also averaging the weights (--ema), the average evaluated beside them.
All three validate alike after every epoch: centre crops of --val-crop-size (default: --crop-size) from images
resized to 8/7 of it. FFCV validates above its training crops (trains at up to 192 px, validates at 256); at this
bench's CPU sizes that hurts: at 40 px resnet18's last feature map is 2x2 where training at 32 made it 1x1, and on the
sample the fixed run's top-1 fell from 96 % at 32 px to 48 % at 40 (the progressive run's, having seen 16 and 24,
to 70 %), which measures the test resolution rather than the recipe.

The table gives each run's resolution per epoch (from its log: what it trained at), its best top-1 and which
weights had it (raw or EMA), its wall time (the trainer's training_time: the epochs with their validations and
checkpoints, so the EMA run also pays for evaluating its average), its mean training images/s, and against the fixed
run its time ratio and top-1 difference. The PNG plots top-1 after each epoch over the seconds since training
started, the EMA run's raw and averaged weights both.

How to read it: on a CPU and the built-in sample this shows the mechanics (each epoch trained at its scheduled
resolution, validation unchanged) and what an epoch at a lower resolution saves on this machine: less than the pixel
count suggests, as the loader decodes whole images whatever the crop and small convolutions use the cores less well.
It is not ImageNet accuracy: the sample's coloured shapes are learnt at resolutions where ImageNet's classes are not,
and each recipe runs once, on one seed, over a few hundred validation images (the table says what one image is
worth), so a difference of a few points may be the seed's rather than the recipe's: rerun with another --seed to
see. The runs go in turn: other load on the machine shows up as time, so run it on an idle one.
`python -m trainer --recipe list` gives what FFCV measured on ImageNet.

Defaults: resnet18 for 6 epochs at 32 px, progressive 16,16,24,32,32,32, validation at 32 px, batch 50, lr 0.05,
EMA decay 0.99 per step; the cpu loader; cuda when there is one. Without --data-path a sample of 10 classes x 400
train and 50 validation images of 64-160 px is made once under build/bench/recipes; then the bench takes about 3
minutes on 2 cores. Results: a table, recipes-<machine>.json and a PNG beside it in --results (default
./bench-results).
"""
import tempfile
from pathlib import Path

import torch

import pipeline
import trainer
from bench import plot, results
from bench.data import prepped_sample
from bench.loaders import DALI_NEEDS
from common.cli import Parser, integer, positive_number, prepped_images
from trainer.args import as_argv
from trainer.model import check_train_crop, classification_models
from trainer.report import read_log

ROOT = Path("build/bench/recipes")
SAMPLE = dict(classes=10, train_per_class=400, val_per_class=50)
SKIP_STEPS = 2       # each epoch's first steps, the loader's restart among them, left out of the images/s
WINDOWS_PER_EPOCH = 4
WARMUP_EPOCHS = 1
RUNS = ("fixed", "progressive", "progressive+ema")


def parse_args(argv):
    gpu = torch.cuda.is_available()
    p = Parser("bench recipes", prog="python -m bench recipes", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", type=Path,
                   help="prep output dir (default: a sample of small images under build/bench/recipes)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--epochs", type=integer(1), default=6)
    p.add_argument("--batch-size", type=integer(1), default=50)
    p.add_argument("--lr", type=positive_number, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--crop-size", type=integer(1), default=32,
                   help="training crop of the fixed run, the largest of the ramp (default 32)")
    p.add_argument("--min-res", type=integer(1), default=16, help="the ramp's first resolution (default 16)")
    p.add_argument("--start-ramp", type=integer(0), default=1, help="the last epoch at --min-res (default 1)")
    p.add_argument("--end-ramp", type=integer(0), default=3, help="the first epoch at --crop-size (default 3)")
    p.add_argument("--res-multiple", type=integer(1), default=8,
                   help="resolutions on the ramp are multiples of this (default 8)")
    p.add_argument("--val-crop-size", type=integer(1), help="validation centre crop (default: --crop-size)")
    p.add_argument("--ema", type=float, default=0.99, help="the EMA run's decay per step (default 0.99)")
    p.add_argument("--ema-every", type=integer(1), default=1, help="steps between updates of the average (default 1)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--loader", choices=pipeline.DATA_BACKENDS, default="cpu")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if gpu else "cpu",
                   help="default: cuda when there is one")
    results.add_option(p)
    args = p.parse_args(argv)
    results.check_option(p, args)
    args.val_crop_size = args.val_crop_size or args.crop_size
    check_values(p, args)
    check_data(p, args)
    return args


def check_values(parser, args):
    """Checked before any run: the trainer refuses a bad flag only when the run given it starts, and the ramp's and
    the average's are the second and third runs', minutes into the bench."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu")
    if args.loader not in pipeline.available_backends(args.device == "cuda"):
        parser.error(f"--loader {args.loader} cannot run here: {DALI_NEEDS}")
    if args.model not in classification_models():
        parser.error(f"--model {args.model} is not a torchvision classification model (such as resnet18, resnet50)")
    if args.min_res > args.crop_size:
        parser.error(f"--min-res {args.min_res} is above --crop-size {args.crop_size}, where the ramp ends")
    if args.start_ramp > args.end_ramp:
        parser.error(f"--start-ramp {args.start_ramp} is after --end-ramp {args.end_ramp}")
    if not 0 < args.ema < 1:
        parser.error(f"--ema must be in (0, 1), not {args.ema}")
    for flag, size in (("--crop-size", args.crop_size), ("--min-res", args.min_res)):
        try:
            check_train_crop(args.model, size)
        except ValueError as error:
            parser.error(f"{flag} {size}: {error}")


def check_data(parser, args):
    """The data (--data-path, else the sample this bench makes) has validation images and enough train images for a
    timed step each epoch; sets args.steps_per_epoch."""
    if args.data_path:
        found = parser.prep_output("--data-path", args.data_path)
        if not prepped_images(found, "val"):
            parser.error(f"--data-path {args.data_path} has no validation images: accuracy is what this bench "
                         "measures")
        images, named = prepped_images(found, "train"), f"--data-path {args.data_path}"
    else:
        images, named = SAMPLE["classes"] * SAMPLE["train_per_class"], "the built-in sample"
    args.steps_per_epoch = images // args.batch_size
    if args.steps_per_epoch <= SKIP_STEPS:
        parser.error(f"{named} gives {args.steps_per_epoch} steps of --batch-size {args.batch_size} an epoch; the "
                     f"runs need more than {SKIP_STEPS}, the untimed first steps of each epoch")


def main(argv=None):
    args = parse_args(argv or [])
    data_path = args.data_path or sample_shards()
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for number, (name, settings) in enumerate(run_settings(args).items(), 1):
            schedule = " ".join(as_argv(settings)) or f"--crop-size {args.crop_size} every epoch"
            print(f"\n== bench recipes {number}/{len(RUNS)}: {name} ({schedule})", flush=True)
            runs[name] = measure(args, data_path, settings, Path(scratch) / name)
    payload = summarise(args, data_path, runs)
    print_table(payload)
    path = results.save("recipes", payload, out_dir=args.results)
    try:
        image = plot.plot_recipes(payload, path.with_suffix(".png"))
    except ImportError as missing:  # matplotlib is optional: the figures are saved, only the PNG is not drawn
        print(f"saved {path}; no PNG: {missing}")
        return 0
    print(f"saved {path} and {image}")
    return 0


def sample_shards():
    """The built-in sample's shards, made once under ROOT, then reused: small images, so the runs' time goes to the
    model at each resolution rather than to decoding photos."""
    return prepped_sample(ROOT / f"{SAMPLE['classes']}x{SAMPLE['train_per_class']}", **SAMPLE)


def run_settings(args):
    """Each run's own trainer settings: none, the ramp, the ramp and the average."""
    ramp = dict(min_res=args.min_res, start_ramp=args.start_ramp, end_ramp=args.end_ramp,
                res_multiple=args.res_multiple)
    return dict(zip(RUNS, ({}, ramp, {**ramp, "ema": args.ema, "ema_every": args.ema_every})))


def shared_settings(args, data_path, out):
    """The settings every run shares: all but the resolution schedule and the average."""
    return dict(data_path=str(data_path), loader=args.loader, device=args.device, model=args.model,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine",
                warmup_epochs=WARMUP_EPOCHS, seed=args.seed, crop_size=args.crop_size,
                val_crop_size=args.val_crop_size, val_size=val_size(args),
                print_freq=max(1, args.steps_per_epoch // WINDOWS_PER_EPOCH), skip_steps=SKIP_STEPS,
                keep_checkpoints=1, output_dir=str(out))


def val_size(args):
    """The validation resize: 8/7 of the centre crop, as 256 is of ImageNet's 224."""
    return round(args.val_crop_size * 8 / 7)


def measure(args, data_path, settings, out):
    """One trainer run with the shared settings and its own: the figures of its report, and from its log the
    resolution each epoch trained at and the validations over time."""
    report = trainer.run(trainer.configure(**shared_settings(args, data_path, out), **settings))
    flags = as_argv(settings)
    records = read_log(out)
    trained_at = {r["epoch"]: r["resolution"] for r in records if r["phase"] == "train" and "resolution" in r}
    return {"flags": flags, "epochs": report["epochs"], "seed": args.seed,
            "resolutions": [trained_at.get(epoch) for epoch in range(report["epochs"])],
            **{key: report[key] for key in ("acc1_best", "acc5_best", "best_weights", "training_time",
                                            "train_fps_mean", "val_images")},
            "val": validations(records, "val"), "val_ema": validations(records, "val_ema")}


def validations(records, phase):
    """[{epoch, seconds, acc1, acc5}] of the log's `phase` records (val, or val_ema for the average)."""
    return [{key: r[key] for key in ("epoch", "seconds", "acc1", "acc5")} for r in records if r["phase"] == phase]


def summarise(args, data_path, runs):
    fixed = runs["fixed"]
    for run in runs.values():
        run["time_ratio"] = round(run["training_time"] / fixed["training_time"], 3)
        run["acc1_diff"] = round(run["acc1_best"] - fixed["acc1_best"], 3)
    return {"data_path": str(data_path), "device": args.device, "loader": args.loader, "model": args.model,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "crop_size": args.crop_size, "min_res": args.min_res, "start_ramp": args.start_ramp,
            "end_ramp": args.end_ramp, "res_multiple": args.res_multiple, "val_crop_size": args.val_crop_size,
            "val_size": val_size(args), "ema": args.ema, "ema_every": args.ema_every, "runs": runs}


def print_table(payload):
    runs = payload["runs"]
    val_images = runs["fixed"]["val_images"]
    print(f"\nrecipes: {payload['model']}, {payload['epochs']} epochs, batch {payload['batch_size']}, lr "
          f"{payload['lr']:g}, seed {payload['seed']}, {payload['loader']} loader on {payload['device']}; validation "
          f"at {payload['val_crop_size']} px (resized to {payload['val_size']}) over {val_images} images, where one "
          f"image is {100 / val_images:.2g} points of top-1")
    width = max(len("resolutions per epoch"), *(len(resolutions_text(run)) for run in runs.values()))
    print(f"{'run':<16} {'epochs':>6}  {'resolutions per epoch':<{width}} {'acc1 best':>9} {'weights':>7} "
          f"{'wall s':>7} {'img/s':>7} {'time ratio':>10} {'acc1 diff':>9}")
    for name, run in runs.items():
        print(f"{name:<16} {run['epochs']:>6}  {resolutions_text(run):<{width}} {run['acc1_best']:9.2f} "
              f"{run['best_weights']:>7} {run['training_time']:7.1f} {run['train_fps_mean']:7.1f} "
              f"{run['time_ratio']:10.2f} {run['acc1_diff']:+9.2f}")
    print("time ratio: wall s over the fixed run's; acc1 diff: points of best top-1 above the fixed run's")


def resolutions_text(run):
    """The run's resolution per epoch, such as 16,16,24,32; ? for an epoch whose log records none."""
    return ",".join("?" if size is None else str(size) for size in run["resolutions"])
