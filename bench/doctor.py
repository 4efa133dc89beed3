"""`python -m bench doctor`: the self-check to run first on a new machine; every path it has, in a few minutes.

    python -m bench doctor [--device cuda|cpu] [--data-path SHARDS] [--compile | --no-compile] [--out-dir DIR]

It checks, through the public interfaces, what the test suite cannot check without this machine's hardware:
- each loader backend (dali with the GPU decoder, dali-cpu, cpu with its page-locked ring, synthetic) hands out
  correctly labelled, correctly normalised batches on the device, in float32/NCHW, float16 and bfloat16
  channels_last, over a colour-coded image set (bench.colours) where every output image says which sample it is;
- trainer steps with bf16 and fp16 autocast and channels_last, eager and torch.compile'd, with the host-sync
  guard on (`--check-syncs`: torch.cuda.set_sync_debug_mode on a GPU), and finite losses; on a CPU an fp16 step
  that works is a warning, not a pass, with its speed against bf16's in the same run (the trainer warns too);
- a short DDP run over the GPUs (nccl; 2 or more) or two CPU processes (gloo);
- images/s of the trainer fed by each loader beside the synthetic ceiling, and the bottleneck verdict;
- library, driver and device versions.
A check this machine cannot run says so and why. The exit status is 1 if any check FAILs (a warning is no
failure). Everything, with the failures' tracebacks, is saved as JSON (doctor-<machine>.json in --results, default
./bench-results): send that file with a bug report.
"""
import argparse
import contextlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import pipeline
import trainer
from bench import acceptance, colours, results
from bench.data import imagenet_sized_shards
from bench.train import trainer_report, verdict
from common.atomic import write_atomically
from common.cli import Parser, prepped_images
from prep import imagenet as prep_imagenet
from trainer.args import as_argv
from trainer.footprint import SLOW_FP16
from trainer.report import read_log

ROOT = Path(__file__).resolve().parents[1]
PASS, WARN, FAIL, NOT_RUN = "pass", "warn", "FAIL", "not run"
FORMATS = ((torch.float32, False), (torch.float16, True), (torch.bfloat16, True))
LOADER_GEOMETRY = dict(crop_size=32, val_size=36, workers=2)
LOADER_BATCH = 8
RESIZED = 24  # a train pass at a side below crop_size (progressive resizing), after one at full size
# The trainer's step checks and speed runs, sized to finish in minutes: the CPU ones are only a smoke test.
SIZES = {
    "cuda": dict(step_model="resnet50", step_crop=128, step_batch=32, speed_model="resnet50", speed_crop=224,
                 speed_batch=64, speed_steps=24, speed_skip=6),
    "cpu": dict(step_model="resnet18", step_crop=32, step_batch=8, speed_model="resnet18", speed_crop=64,
                speed_batch=16, speed_steps=4, speed_skip=2),
}


@dataclass
class Row:
    check: str
    result: str
    figure: str = ""
    detail: str = ""  # a failure's traceback (JSON only)


class CheckFailed(AssertionError):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def parse_args(argv):
    p = Parser("bench doctor", prog="python -m bench doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one")
    p.add_argument("--data-path", type=Path, help="prep output dir for the throughput runs (default: an "
                   "ImageNet-sized sample under build/bench/data)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="include the torch.compile steps (default: on a GPU; on a CPU they take minutes of C++ "
                        "builds)")
    p.add_argument("--full", action="store_true",
                   help="also the acceptance of a GPU machine (bench.acceptance): training methods, exact resume, "
                        "SIGTERM, and the figures beside their references; a short markdown report beside the JSON")
    results.add_option(p, "--out", "--out-dir")  # --out-dir: its earlier name
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here; run with --device cpu for the CPU subset")
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.compile = args.device.type == "cuda" if args.compile is None else args.compile
    spelled = next((arg.split("=")[0] for arg in argv or () if arg.split("=")[0] in ("--out", "--out-dir")),
                   "--results")
    results.check_option(p, args, spelled)
    if args.data_path:
        check_data(p, args)
    return args


def check_data(parser, args):
    """--data-path is a prep output with enough train images for the throughput runs."""
    found = parser.prep_output("--data-path", args.data_path)
    images, needed = prepped_images(found, "train"), speed_images(speed_run(args))
    if images < needed:
        parser.error(f"--data-path {args.data_path} has {images} train images; the throughput runs on "
                     f"{args.device.type} read {needed}")


def speed_images(run):
    """Train images the throughput runs read: one epoch of their steps."""
    return run.batch_size * (run.steps + run.skip_steps)


def main(argv=None):
    args = parse_args(argv or [])
    rows = [Row("versions", "info", versions())]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = colour_data(scratch)
        run, measured = speed_run(args), {}
        checks = [loader_checks(data, args.device), step_checks(args, scratch), ddp_checks(args, scratch),
                  speed_checks(args, scratch, run, measured)]
        if args.full:
            checks.append(acceptance.full_checks(args, scratch, data, checked, run, measured))
        for check in checks:
            for row in check:
                rows.append(row)
                print(f"{row.check:<44} {row.result:<8} {row.figure}", flush=True)
    print_table(rows, time.perf_counter() - started)
    path = save(rows, args)
    if args.full:
        write_atomically(path.with_suffix(".md"), markdown(rows, time.perf_counter() - started, args))
    failed = [row for row in rows if row.result == FAIL]
    print(f"saved {path}" + (f"; {len(failed)} check(s) FAILED: send that file and this table with the report"
                             if failed else ""))
    return 1 if failed else 0


def checked(name, run):
    """A Row from `run()` -> figure; an exception is a FAIL naming it (its traceback kept for the JSON)."""
    try:
        return Row(name, PASS, run())
    except (Exception, SystemExit) as error:  # a check reports whatever went wrong, then the next one runs
        summary = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Row(name, FAIL, f"{type(error).__name__}: {summary}"[:200], traceback.format_exc())


def versions():
    info = results.machine_info()
    parts = [f"python {info['python']}", *(f"{name} {v}" for name, v in info["libraries"].items())]
    if torch.cuda.is_available():
        parts += [f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}",
                  f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}", f"driver {_driver_version()}",
                  f"{info['gpu_count']} x {info['gpu']}"]
    else:
        parts.append("no CUDA device")
    return ", ".join(parts) + f"; {info['cpu']}, {info['cores']} cores"


def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no nvidia-smi)"
    return out[0] if out else "unknown"


# --- loaders --------------------------------------------------------------------------------------------

def colour_data(scratch):
    """bench.colours' image set as prep writes it: shards and the folder layout side by side."""
    src = colours.write_tree(scratch / "colours")
    out = scratch / "colour-shards"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = prep_imagenet.main(["--src", str(src), "--out", str(out), "--layout", "both", "--workers", "1"])
    if status:
        raise SystemExit(f"bench doctor: prep of the colour-coded set in {src} failed (exit {status})")
    return out


def loader_checks(data, device):
    usable = pipeline.available_backends(device.type == "cuda")
    for backend in pipeline.BACKENDS:
        name = f"loader {backend} on {device.type}"
        why_not = _why_not_here(backend, device, usable)
        if why_not:
            yield Row(name, NOT_RUN, why_not)
            continue
        yield checked(name, lambda backend=backend: _check_backend(data, backend, device))


def _why_not_here(backend, device, usable):
    if pipeline.backend(backend).needs_cuda and device.type != "cuda":
        return "needs a CUDA device (nvJPEG decode)"
    if backend in usable:
        return None
    return "needs NVIDIA DALI: pip install 'imagenet-feed[dali]'"


def _check_backend(data, backend, device):
    for dtype, channels_last in FORMATS:
        for split in ("train", "val"):
            _check_epoch(data, backend, device, split, dtype, channels_last)
    what = "shapes, dtypes, layouts" if not pipeline.backend(backend).reads_data else \
        f"{colours.TRAIN} train + {colours.VAL} val images each: labels, colours, coverage"
    return f"fp32/NCHW, fp16/CL, bf16/CL x train (then at {RESIZED} px), val: {what}"


def _check_epoch(data, backend, device, split, dtype, channels_last):
    options = pipeline.DataOptions(loader=backend, batch_size=LOADER_BATCH, **LOADER_GEOMETRY)
    loader = pipeline.make_loader(data, split, options, device=device, dtype=dtype, channels_last=channels_last)
    sides = (LOADER_GEOMETRY["crop_size"], RESIZED) if split == "train" else (LOADER_GEOMETRY["crop_size"],)
    for side in sides:  # the same loader: a resized pass reuses its workers, ring or DALI pipeline
        if split == "train":
            loader.set_resolution(side)
        _check_pass(loader, backend, device, split, dtype, channels_last, side)


def _check_pass(loader, backend, device, split, dtype, channels_last, side):
    loader.set_epoch(1)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    where = f"{split} {dtype} {'channels_last' if channels_last else 'NCHW'} {side} px"
    ids, labels, steps = [], [], 0
    for images, batch_labels in loader:
        steps += 1
        expect(images.device.type == device.type and batch_labels.device.type == device.type,
               f"{where}: batch on {images.device}/{batch_labels.device}, asked for {device}")
        expect(images.dtype == dtype and images.is_contiguous(memory_format=memory_format),
               f"{where}: images are {images.dtype} with strides {images.stride()}")
        expect(images.shape[1:] == (3, side, side) and batch_labels.dtype == torch.int64,
               f"{where}: images {tuple(images.shape)}, labels {batch_labels.dtype}")
        expect(colours.in_range(images), f"{where}: values outside the normalised range of 0..255 pixels")
        ids.extend(colours.identify(images))
        labels.extend(batch_labels.tolist())
    expect(steps == len(loader), f"{where}: {steps} batches, len() says {len(loader)}")
    if not pipeline.backend(backend).reads_data:
        return
    ids, labels = np.array(ids), np.array(labels)
    expect(np.array_equal(labels, colours.sample_class(ids)), f"{where}: labels do not match their images")
    if split == "train":
        expect(len(set(ids)) == len(ids) == len(loader) * LOADER_BATCH, f"{where}: a sample repeats")
    else:
        expect(sorted(ids) == list(range(colours.TRAIN, colours.TRAIN + colours.VAL)),
               f"{where}: validation does not show every image once")


# --- trainer steps ----------------------------------------------------------------------------------------

def step_checks(args, scratch):
    sizes = SIZES[args.device.type]
    speeds = {}  # (amp, compiled) -> img/s of the steps that ran
    for amp in ("bf16", "fp16"):  # bf16 first: on the CPU, fp16's speed is reported against it
        for compiled in (False, True):
            name = f"train step amp {amp}, channels_last" + (", compiled" if compiled else "")
            if compiled and not args.compile:
                yield Row(name, NOT_RUN, "torch.compile on a CPU takes minutes of C++ builds (--compile runs it)")
                continue
            settings = dict(loader=pipeline.CEILING, model=sizes["step_model"], crop_size=sizes["step_crop"],
                            batch_size=sizes["step_batch"], amp=amp, channels_last=True, compile=compiled)
            out, key = scratch / f"step-{amp}-{compiled}", (amp, compiled)
            row = checked(name, lambda settings=settings, out=out, key=key: _step_run(args, settings, out, speeds,
                                                                                       key))
            if amp == "fp16" and args.device.type == "cpu":
                row = fp16_on_cpu(row, speeds.get(key), speeds.get(("bf16", compiled)))
            yield row


def fp16_on_cpu(row, fp16_speed, bf16_speed):
    """An fp16 step that works on the CPU is a warning, not a pass: it runs, but slowly (SLOW_FP16); the figure
    gives its speed as a share of bf16's in the same run, when that ran."""
    if row.result != PASS:
        return row
    against = f"{fp16_speed / bf16_speed:.2f} x bf16's {bf16_speed:.0f} img/s" if bf16_speed else "bf16 did not run"
    return replace(row, result=WARN, figure=f"{row.figure} ({against}): {SLOW_FP16}")


def _step_run(args, settings, out, speeds, key):
    """A short trainer run with the host-sync guard on every step past the warm-up; its losses must be finite."""
    config = trainer.configure(**settings, device=args.device.type, epochs=1, training_step_per_epoch=8,
                               eval_step_per_epoch=1, skip_steps=3, print_freq=1, check_syncs=True,
                               output_dir=str(out))
    with contextlib.redirect_stdout(io.StringIO()):
        report = trainer.run(config)
    losses = _train_losses(out)
    expect(losses and all(math.isfinite(loss) for loss in losses), f"losses {losses}")
    speeds[key] = report["train_fps_mean"]
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, no host sync in 5 guarded steps, {speeds[key]:.0f} img/s"


def _train_losses(out):
    return [record["loss"] for record in read_log(out, "train")]


# --- DDP ----------------------------------------------------------------------------------------------------

def ddp_checks(args, scratch):
    """The plain DDP run; with --full, also the acceptance's (compiled, bf16 AMP, channels_last). On a CPU --full
    runs only the latter, with the same two gloo ranks: each launch costs the dry run ~10 s of process starts."""
    if not (args.full and args.device.type == "cpu"):
        yield ddp_check(args, scratch)
    if args.full:
        yield acceptance.ddp_methods(args, scratch, checked)


def ddp_check(args, scratch):
    gpus = torch.cuda.device_count() if args.device.type == "cuda" else 0
    if args.device.type == "cuda" and gpus < 2:
        return Row("ddp nccl", NOT_RUN, f"needs 2 or more GPUs, this machine has {gpus}")
    ranks, backend = (gpus, "nccl") if gpus else (2, "gloo")
    return checked(f"ddp {backend}, {ranks} ranks", lambda: ddp_run(args, ranks, scratch / "ddp"))


def ddp_run(args, ranks, out, **settings):
    """A short `torchrun -m trainer` on the synthetic loader over `ranks` processes, with the trainer `settings`
    besides the step checks' sizes; its figure."""
    sizes = SIZES[args.device.type]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
               "trainer", *as_argv(dict(device=args.device.type, loader=pipeline.CEILING, model=sizes["step_model"],
                                        crop_size=sizes["step_crop"], batch_size=sizes["step_batch"], epochs=1,
                                        training_step_per_epoch=6, eval_step_per_epoch=2, skip_steps=2, print_freq=2,
                                        workers=1, output_dir=str(out), **settings))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    expect(done.returncode == 0, f"torchrun exited {done.returncode}: {done.stderr.strip()[-300:]}")
    report = json.loads((out / "report.json").read_text())
    expect(report["world_size"] == ranks, f"world size {report['world_size']}, launched {ranks}")
    took = {key: report.get(key) for key in settings}
    expect(took == settings, f"the run reports {took}, launched with {settings}")
    losses = _train_losses(out)
    expect(all(math.isfinite(loss) for loss in losses), f"losses {losses}")
    return f"{report['global_step']} steps, {report['train_fps_mean']:.0f} img/s over {ranks} ranks, " \
           f"{report['val_images']} val images"


# --- throughput ---------------------------------------------------------------------------------------------

def speed_run(args):
    """The throughput runs' settings (bench.train's), as --full sizes them on a GPU."""
    sizes = {**SIZES[args.device.type], **(acceptance.SPEED.get(args.device.type, {}) if args.full else {})}
    return SimpleNamespace(device=args.device.type, model=sizes["speed_model"], batch_size=sizes["speed_batch"],
                           crop_size=sizes["speed_crop"], steps=sizes["speed_steps"], skip_steps=sizes["speed_skip"],
                           print_freq=sizes["speed_steps"], amp="bf16" if args.device.type == "cuda" else "off",
                           channels_last=args.device.type == "cuda", workers=None)


def speed_data(args, run):
    """The throughput runs' data: --data-path, else an ImageNet-sized sample of one epoch of their steps."""
    return args.data_path or imagenet_sized_shards(speed_images(run))


def speed_checks(args, scratch, run, measured):
    """img/s of the trainer fed by each loader (into `measured`: loader -> its report), and the bottleneck."""
    usable = pipeline.available_backends(args.device.type == "cuda")
    loaders = [pipeline.CEILING, *(b for b in pipeline.DATA_BACKENDS if b in usable)]
    data = speed_data(args, run)
    for loader in loaders:
        row = checked(f"img/s {loader}", lambda loader=loader: _speed(run, data, loader, scratch, measured))
        yield row
    if len(measured) > 1 and pipeline.CEILING in measured:
        ceiling = measured[pipeline.CEILING]["train_fps_mean"]
        for row in measured.values():
            row["ratio_to_synthetic"] = row["train_fps_mean"] / ceiling
        yield Row("bottleneck", "info", verdict(measured))


def _speed(run, data, loader, scratch, measured):
    before = resource.getrusage(resource.RUSAGE_SELF)
    report = trainer_report(run, data, loader, scratch / f"speed-{loader}")
    after = resource.getrusage(resource.RUSAGE_SELF)
    report["host_s_per_batch"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / \
        report["global_step"]
    report["data_path"] = str(data)
    measured[loader] = report
    return f"{report['train_fps_mean']:.0f} img/s, data wait {report['data_wait_share']:.0%}, this process's CPU " \
           f"{report['host_s_per_batch'] * 1e3:.1f} ms per batch ({run.model} {run.crop_size} px, batch " \
           f"{run.batch_size}, amp {run.amp})"


# --- output ---------------------------------------------------------------------------------------------------

def print_table(rows, seconds):
    width = max(len(row.check) for row in rows)
    print(f"\nbench doctor ({seconds:.0f} s)")
    print(f"{'check':<{width}}  {'result':<8} figure")
    for row in rows:
        print(f"{row.check:<{width}}  {row.result:<8} {row.figure}")
    for result, heading in ((WARN, "warnings"), (NOT_RUN, "not run here")):
        checks = [row.check for row in rows if row.result == result]
        if checks:
            print(f"{heading}: {', '.join(checks)}")


def markdown(rows, seconds, args):
    """The table as a short markdown report: what a GPU machine's acceptance sends back."""
    lines = [f"# bench doctor --full on {args.device.type} ({seconds:.0f} s)", "", "| check | result | figure |",
             "|---|---|---|"]
    lines += [f"| {row.check} | {row.result} | {row.figure.replace('|', '/')} |" for row in rows]
    failed = [row.check for row in rows if row.result == FAIL]
    lines += ["", f"FAILED: {', '.join(failed)}" if failed else "No check failed."]
    return "\n".join(lines) + "\n"


def save(rows, args):
    return results.save("doctor", {"device": str(args.device), "rows": [asdict(row) for row in rows]}, args.results)
