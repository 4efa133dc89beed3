"""`python -m bench train`: the trainer fed by each loader, against the synthetic loader and a bare torch loop.

    python -m bench train [--data-path SHARDS] [--model M] [--batch-size B] [--crop-size C] [--steps N] ...

Every run is the real trainer (trainer.fit.main, in this process) on the same model, batch, resolution and
precision; only --loader changes. The synthetic loader's device-resident batch is the compute-only ceiling:
a real loader's train_fps_mean over it says how much the data costs, and the share of step time spent
blocked in next(loader) says whether the step waited for data. The synthetic run is also timed against a
bare loop (forward, loss, backward, optimizer step on the same batch, nothing else) to show what the
trainer itself costs. Runs alternate over --rounds and the best round of each loader counts (other load on
the machine only slows a run down); the bare loop runs just before the synthetic trainer in every round, and
the trainer overhead is the median of those paired ratios, so drifts in machine load cancel.

Defaults: on a CPU resnet18 at 64 px, batch 32, 12 timed steps after 3 skipped (about 2 minutes on 2 cores);
on a GPU ResNet-50 at 224 px, batch 256, bf16 autocast, channels_last, 50 timed steps after 10 skipped.
Without --data-path an ImageNet-sized sample big enough for one epoch of the run is made once under
build/bench/data. Results: a table, train-<machine>.json and a PNG beside it in --results (default
./bench-results), with this machine's `bench loaders` result there drawn in as the loader-only ceilings.
"""
import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import pipeline
import trainer
from bench import plot, results
from bench.data import imagenet_sized_shards
from bench.loaders import DALI_NEEDS
from common.cli import Parser, integer, prepped_images
from trainer.config import AMP_DTYPES
from trainer.model import build_model, check_train_crop, classification_models

CPU_DEFAULTS = dict(model="resnet18", batch_size=32, crop_size=64, steps=12, skip_steps=3, print_freq=3, amp="off",
                    channels_last=False)
GPU_DEFAULTS = dict(model="resnet50", batch_size=256, crop_size=224, steps=50, skip_steps=10, print_freq=10,
                    amp="bf16", channels_last=True)
OVERHEAD_TARGET = 0.98
KEEPS_UP = 0.9     # a loader within 10 % of synthetic does not hold the step back
WAITS = 0.1        # more than 10 % of step time blocked in next(loader) is waiting for data


def parse_args(argv):
    gpu = torch.cuda.is_available()
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    usable = [b for b in pipeline.available_backends(gpu) if b in pipeline.DATA_BACKENDS]
    p = Parser("bench train", prog="python -m bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", type=Path,
                   help="prep output dir (default: an ImageNet-sized sample under build/bench/data)")
    p.add_argument("--loaders", default=",".join(usable),
                   help="comma-separated real loaders; synthetic always runs (default: those usable here)")
    p.add_argument("--model", default=defaults["model"])
    p.add_argument("--batch-size", type=integer(1), default=defaults["batch_size"])
    p.add_argument("--crop-size", type=integer(1), default=defaults["crop_size"])
    p.add_argument("--steps", type=integer(1), default=defaults["steps"], help="timed steps per run")
    p.add_argument("--skip-steps", type=integer(0), default=defaults["skip_steps"],
                   help="untimed warm-up steps per run")
    p.add_argument("--print-freq", type=integer(1), default=defaults["print_freq"], help="steps per timing window")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=defaults["amp"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=defaults["channels_last"])
    p.add_argument("--workers", type=integer(1), help="loader workers (default: the loader's)")
    p.add_argument("--rounds", type=integer(1), default=5,
                   help="alternating rounds; the best of each counts (default 5)")
    results.add_option(p)
    args = p.parse_args(argv)
    results.check_option(p, args)
    args.loaders = [name for name in args.loaders.split(",") if name and name != pipeline.CEILING]
    unknown = [name for name in args.loaders if name not in pipeline.BACKENDS]
    if unknown:
        p.error(f"--loaders: unknown {', '.join(unknown)}; choose from {', '.join(pipeline.BACKENDS)}")
    unusable = [name for name in args.loaders if name not in usable]
    if unusable:
        p.error(f"--loaders {','.join(unusable)} cannot run here: {DALI_NEEDS}")
    if args.model not in classification_models():
        p.error(f"--model {args.model} is not a torchvision classification model (such as resnet18, resnet50, vgg16)")
    try:
        check_train_crop(args.model, args.crop_size)
    except ValueError as error:
        p.error(str(error))
    if args.data_path:
        check_data(p, args)
    args.device = "cuda" if gpu else "cpu"
    return args


def check_data(parser, args):
    """--data-path is a prep output with enough train images for the steps of one run."""
    found = parser.prep_output("--data-path", args.data_path)
    images, steps = prepped_images(found, "train"), steps_per_run(args)
    if images // args.batch_size < steps:
        parser.error(f"--data-path {args.data_path} has {images} train images, {images // args.batch_size} steps of "
                     f"--batch-size {args.batch_size}; a run takes {steps} (--skip-steps, then --steps)")


def steps_per_run(args):
    """The untimed --skip-steps, then the timed --steps."""
    return args.skip_steps + args.steps


def main(argv=None):
    args = parse_args(argv or [])
    data_path = args.data_path or imagenet_sized_shards(args.batch_size * steps_per_run(args))
    names = [pipeline.CEILING, *args.loaders]
    trainer_runs = {name: [] for name in names}
    bare_runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(1, args.rounds + 1):
            bare_runs.append(bare_loop_fps(args, data_path))
            print(f"round {round_number}/{args.rounds} {'bare loop':>10}: {bare_runs[-1]:8.1f} img/s", flush=True)
            for name in names:
                report = trainer_report(args, data_path, name, Path(scratch) / f"{name}-{round_number}")
                trainer_runs[name].append(report)
                print(f"round {round_number}/{args.rounds} {name:>10}: {report['train_fps_mean']:8.1f} img/s, "
                      f"data wait {report['data_wait_share']:.0%}", flush=True)
    best = {name: max(reports, key=lambda r: r["train_fps_mean"]) for name, reports in trainer_runs.items()}
    payload = summarise(args, data_path, best, trainer_runs, bare_runs)
    print_table(payload)
    path = results.save("train", payload, out_dir=args.results)
    try:
        image = plot.plot_train(payload, path.with_suffix(".png"), loaders_result(path))
    except ImportError as missing:  # matplotlib is optional: the figures are saved, only the PNG is not drawn
        print(f"saved {path}; no PNG: {missing}")
        return 0
    print(f"saved {path} and {image}")
    return 0


def trainer_config(args, data_path, loader, out):
    return trainer.configure(loader=loader, data_path=str(data_path), device=args.device, model=args.model,
                             batch_size=args.batch_size, crop_size=args.crop_size,
                             val_size=round(args.crop_size * 8 / 7), epochs=1,
                             training_step_per_epoch=steps_per_run(args), eval_step_per_epoch=1,
                             skip_steps=args.skip_steps, print_freq=args.print_freq, amp=args.amp,
                             output_dir=str(out), channels_last=args.channels_last, workers=args.workers)


def trainer_report(args, data_path, loader, out):
    """One trainer run, its log kept out of the table's way; the report it returns."""
    with contextlib.redirect_stdout(io.StringIO()):
        report = trainer.run(trainer_config(args, data_path, loader, out))
    timed = report["training_step_per_epoch"] - args.skip_steps
    if timed < 1 or report["train_fps_mean"] is None:
        raise SystemExit(f"bench train: {data_path} gives only {report['training_step_per_epoch']} steps of batch "
                         f"{args.batch_size}; need {steps_per_run(args)} (a bigger --data-path)")
    return report


def bare_loop_fps(args, data_path):
    """Forward, loss, backward, optimizer step on the synthetic loader's batch; images/s over args.steps steps."""
    device = torch.device(args.device)
    dtype = AMP_DTYPES[args.amp]
    torch.backends.cudnn.benchmark = True  # as the trainer sets it, whichever runs first
    options = pipeline.DataOptions(loader=pipeline.CEILING, batch_size=args.batch_size, crop_size=args.crop_size,
                                   val_size=max(256, args.crop_size))
    loader = pipeline.make_loader(data_path, "train", options, device=device, dtype=dtype or torch.float32,
                                  channels_last=args.channels_last)
    images, labels = next(iter(loader))
    model = build_model(args.model, loader.num_classes, device, args.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1 * args.batch_size / 256, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    criterion = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype, enabled=dtype is not None):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.skip_steps):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(args, data_path, best, trainer_runs, bare_runs):
    ceiling = best[pipeline.CEILING]["train_fps_mean"]
    loaders = {}
    for name, report in best.items():
        loaders[name] = {key: report[key] for key in ("train_fps_mean", "train_fps_min", "train_fps_max",
                                                      "data_wait_share", "images_skipped")}
        loaders[name].update(ratio_to_synthetic=report["train_fps_mean"] / ceiling,
                             windows=report["train_fps_windows"],
                             rounds=[r["train_fps_mean"] for r in trainer_runs[name]])
    paired = [trainer["train_fps_mean"] / bare for trainer, bare in zip(trainer_runs[pipeline.CEILING], bare_runs)]
    return {"data_path": str(data_path), "device": best[pipeline.CEILING]["device"], "model": args.model,
            "batch_size": args.batch_size, "crop_size": args.crop_size, "amp": args.amp,
            "channels_last": args.channels_last, "steps": args.steps, "skip_steps": args.skip_steps,
            "rounds": args.rounds, "loaders": loaders,
            "bare_loop": {"images_per_s": max(bare_runs), "rounds": bare_runs},
            "trainer_overhead_ratio": statistics.median(paired), "trainer_overhead_rounds": paired,
            "overhead_target": OVERHEAD_TARGET,
            "verdict": verdict(loaders)}


def verdict(loaders):
    """Name the bottleneck for the fastest real loader, from its throughput against synthetic and its data wait."""
    real = {name: row for name, row in loaders.items() if name != pipeline.CEILING}
    if not real:
        return "no real loader ran: only the compute ceiling (synthetic) was measured"
    name, row = max(real.items(), key=lambda item: item[1]["train_fps_mean"])
    ratio, wait = row["ratio_to_synthetic"], row["data_wait_share"]
    facts = (f"{name} reaches {ratio:.0%} of the synthetic loader's throughput and waits for data {wait:.0%} of "
             "step time")
    if ratio >= KEEPS_UP:
        return f"compute-bound: {facts}, so the model, not the data, sets the pace"
    if wait >= WAITS:
        return f"data-bound: {facts}; the loader cannot deliver batches as fast as the model consumes them"
    return (f"data-bound (shared cores): {facts}; batches arrive in time, but decoding takes the cores the model "
            f"needs")


def print_table(payload):
    print(f"\ntrainer throughput, {payload['model']} at {payload['crop_size']} px, batch {payload['batch_size']}, "
          f"amp {payload['amp']}, channels_last {payload['channels_last']}, on {payload['device']}; "
          f"{payload['steps']} timed steps after {payload['skip_steps']} skipped, best of {payload['rounds']} rounds")
    print(f"{'loader':>10} {'fps mean':>9} {'fps min':>9} {'fps max':>9} {'x synth':>8} {'data wait':>10}")
    for name, row in payload["loaders"].items():
        print(f"{name:>10} {row['train_fps_mean']:9.1f} {row['train_fps_min']:9.1f} {row['train_fps_max']:9.1f} "
              f"{row['ratio_to_synthetic']:8.2f} {row['data_wait_share']:10.1%}")
    print(f"{'bare loop':>10} {payload['bare_loop']['images_per_s']:9.1f}")
    rounds = " ".join(f"{ratio:.3f}" for ratio in payload["trainer_overhead_rounds"])
    print(f"\ntrainer overhead: synthetic trainer / bare loop = {payload['trainer_overhead_ratio']:.3f}, median of "
          f"the rounds' paired runs ({rounds}; target >= {OVERHEAD_TARGET})")
    print(f"verdict: {payload['verdict']}")


def loaders_result(train_result_path):
    """This machine's `bench loaders` result, if one was saved: the loader-only ceilings for the plot."""
    path = train_result_path.with_name(train_result_path.name.replace("train-", "loaders-", 1))
    return json.loads(path.read_text()) if path.is_file() else None
