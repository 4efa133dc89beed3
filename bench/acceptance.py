"""`python -m bench doctor --full`: the doctor's checks, then what a first run on a GPU machine must also show, in
one command, each through the trainer's public entry points (trainer.configure/run, `python -m trainer`):
- the training methods under the host-sync guard: EMA, mixup + CutMix, progressive resizing (the img/s of each
  resolution), --accumulate;
- a run stopped mid-epoch and resumed ends with the weights of the unbroken run (bit for bit, or the largest
  difference said);
- SIGTERM mid-run: a checkpoint, exit status 75, and the same command goes on from it;
- the figures, each beside its reference, from the doctor's throughput runs (which --full sizes on a GPU as the
  published figures are: ResNet-50 AMP bf16 channels_last, batch 256 at 224): the synthetic loader's img/s (the
  model-bound ceiling) beside published per-GPU figures; the `cpu` loader feeding the same model on real JPEGs (its
  share of that ceiling, its data wait, this process's CPU per batch); and the step time eager against compiled
  (with --compile).
Sized by device: on a CPU it is a dry run of every path in a few minutes (the tests run it), with the GPU-only
references marked as such.
"""
import contextlib
import dataclasses
import io
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import torch

import pipeline
import trainer
from bench.train import trainer_config
from trainer.args import as_argv
from trainer.preempt import EXIT_PREEMPTED
from trainer.report import read_log

# Published ResNet-50 training throughput per GPU, the ceiling's references (not measured here).
REFERENCES = {"DeepLearningExamples, AMP, per A100": 2470, "MLPerf Training, per H200": 7900}
SIZES = {"cuda": dict(model="resnet50", method_crop=128, method_batch=64),
         "cpu": dict(model="resnet18", method_crop=32, method_batch=8)}
# The doctor's throughput runs as the acceptance sizes them: ResNet-50 at the published figures' batch and crop.
SPEED = {"cuda": dict(speed_model="resnet50", speed_crop=224, speed_batch=256, speed_steps=40, speed_skip=10)}
SIGTERM_WAIT_S = 120.0


def full_checks(args, scratch, data, checked, run, measured):
    """The rows of the acceptance's checks; `data`: the doctor's colour-coded shards, `checked`: its Row maker;
    `run` and `measured`: its throughput runs' settings and reports."""
    sizes = SIZES[args.device.type]
    for name, settings in _methods(sizes).items():
        yield checked(f"method {name}", lambda settings=settings, name=name: _method(args, sizes, settings,
                                                                                    scratch / f"method-{name}"))
    yield checked("stop mid-epoch, resume: the unbroken run's weights", lambda: _resume(args, data, scratch))
    yield checked("SIGTERM: checkpoint, exit 75, the same command goes on", lambda: _sigterm(args, scratch))
    yield from _figures(args, scratch, run, measured, checked)


def _base(args, sizes, out, **settings):
    return dict(device=args.device.type, model=sizes["model"], crop_size=sizes["method_crop"],
                val_size=round(sizes["method_crop"] * 8 / 7), batch_size=sizes["method_batch"], workers=2,
                amp="bf16" if args.device.type == "cuda" else "off", channels_last=args.device.type == "cuda",
                print_freq=1, skip_steps=1, eval_step_per_epoch=1, output_dir=str(out), **settings)


def _methods(sizes):
    smallest = max(16, sizes["method_crop"] // 2)
    return {"EMA": dict(ema=0.99), "mixup + CutMix": dict(mixup=0.2, cutmix=1.0),
            "progressive resizing": dict(min_res=smallest, start_ramp=0, end_ramp=1, res_multiple=8, epochs=3),
            "--accumulate 2": dict(accumulate=2)}


def _method(args, sizes, settings, out):
    """A short synthetic-data run of the method under --check-syncs: finite losses; the img/s of each resolution."""
    settings = {"epochs": 2, **settings}
    config = trainer.configure(**_base(args, sizes, out, loader=pipeline.CEILING, training_step_per_epoch=4,
                                       check_syncs=True, compile=args.compile, **settings))
    with contextlib.redirect_stdout(io.StringIO()):
        report = trainer.run(config)
    losses = _losses(out)
    _expect(losses and all(math.isfinite(loss) for loss in losses), f"losses {losses}")
    by_side = {}
    for _, fps, side in report["train_fps_windows"]:
        by_side.setdefault(side, []).append(fps)
    rates = ", ".join(f"{side or config.crop_size} px {sum(f) / len(f):.0f} img/s" for side, f in by_side.items())
    return f"{report['global_step']} steps, losses finite, no host sync; {rates}"


def _resume(args, data, scratch):
    """An unbroken run against one stopped at --stop-step-num mid-epoch and run again: the final weights."""
    sizes = SIZES[args.device.type]
    settings = {**_base(args, sizes, None), "loader": "cpu", "data_path": str(data), "epochs": 2,
                "training_step_per_epoch": 4, "seed": 5, "crop_size": 32, "val_size": 36, "batch_size": 8}
    finals = {}
    for name, stops in (("unbroken", ()), ("resumed", (3,))):
        out = scratch / f"resume-{name}"
        with contextlib.redirect_stdout(io.StringIO()):
            for stop in stops:
                trainer.run(trainer.configure(**{**settings, "output_dir": str(out), "stop_step_num": stop}))
            trainer.run(trainer.configure(**{**settings, "output_dir": str(out)}))
        finals[name] = torch.load(out / "checkpoint.pth", weights_only=True, map_location="cpu")["model"]
    worst = max((finals["unbroken"][k].float() - finals["resumed"][k].float()).abs().max().item()
                for k in finals["unbroken"])
    _expect(worst < 1e-2, f"the resumed run's weights differ from the unbroken run's by up to {worst:.3g}")
    return "bit-identical" if worst == 0 else f"largest difference {worst:.3g} (cuDNN's autotuned kernels)"


def _sigterm(args, scratch):
    """`python -m trainer` stopped by SIGTERM once it trains: exit 75 with a checkpoint; then it goes on from it."""
    sizes, out = SIZES[args.device.type], scratch / "sigterm"
    command = [sys.executable, "-m", "trainer", *as_argv(_base(args, sizes, out, loader=pipeline.CEILING, epochs=1,
                                                                training_step_per_epoch=100000))]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        lines = _wait_for_steps(run, 3)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=SIGTERM_WAIT_S)
        printed = "".join(iter(lines.get, None))
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    _expect(run.returncode == EXIT_PREEMPTED, f"exit status {run.returncode}: {printed.strip()[-300:]}")
    saved = torch.load(out / "checkpoint.pth", weights_only=True, map_location="cpu")["position"]["global_step"]
    goes_on = subprocess.run([*command, "--stop-step-num", str(saved + 1)], capture_output=True, text=True,
                             timeout=SIGTERM_WAIT_S)
    _expect(goes_on.returncode == 0 and f"global step {saved}" in goes_on.stdout,
            f"the same command after the stop: exit {goes_on.returncode}: {goes_on.stdout.strip()[-300:]}")
    return f"stopped at global step {saved} with a checkpoint, exit {EXIT_PREEMPTED}; the same command resumed it"


def _wait_for_steps(run, steps):
    """Until the trainer prints step `steps`'s line; a line that does not come within SIGTERM_WAIT_S fails. The
    lines are read on a thread, so that the wait has its deadline whatever the trainer does."""
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in run.stdout] + [lines.put(None)],
                     daemon=True).start()
    deadline = time.monotonic() + SIGTERM_WAIT_S
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no step {steps} within {SIGTERM_WAIT_S:g} s") from None
        if line is None:
            raise AssertionError(f"the trainer ended before step {steps} (exit {run.wait()})")
        if line.startswith(f"epoch 0 step {steps}/"):
            return lines


def _figures(args, scratch, run, measured, checked):
    """From the doctor's throughput runs (`measured`): the ceiling beside its references, the cpu loader's share of
    it; and with --compile, the ceiling's step time eager against compiled."""
    yield checked("ceiling: synthetic loader img/s", lambda: _ceiling(run, measured))
    yield checked("cpu loader on JPEGs: share of the ceiling", lambda: _fed(measured))
    if args.compile:
        yield checked("step time, eager vs compiled", lambda: _compiled(run, scratch, measured))


def _measured(measured, loader):
    _expect(loader in measured, f"the {loader} loader's throughput run did not pass (its row says why)")
    return measured[loader]


def _ceiling(run, measured):
    fps = _measured(measured, pipeline.CEILING)["train_fps_mean"]
    against = "; ".join(f"{name} {value:,}" for name, value in REFERENCES.items())
    where = "" if run.device == "cuda" else " (the references are ResNet-50 per GPU; this is the CPU's dry run)"
    return f"{fps:,.0f} img/s ({run.model} {run.crop_size} px, batch {run.batch_size}, amp {run.amp}); " \
           f"published: {against}{where}"


def _fed(measured):
    ceiling, fed = _measured(measured, pipeline.CEILING), _measured(measured, "cpu")
    return f"{fed['train_fps_mean'] / ceiling['train_fps_mean']:.0%} of the ceiling, data wait " \
           f"{fed['data_wait_share']:.0%}; this process's CPU {fed['host_s_per_batch'] * 1e3:.1f} ms per batch " \
           "(launching the model and the loader's share; its workers besides; on a CPU the model too)"


def _compiled(run, scratch, measured):
    eager = _measured(measured, pipeline.CEILING)
    config = dataclasses.replace(trainer_config(run, eager["data_path"], pipeline.CEILING, scratch / "compiled"),
                                 compile=True)
    with contextlib.redirect_stdout(io.StringIO()):
        compiled = trainer.run(config)
    step = {name: run.batch_size / report["train_fps_mean"] * 1e3 for name, report in (("eager", eager),
                                                                                          ("compiled", compiled))}
    return f"eager {step['eager']:.1f} ms, compiled {step['compiled']:.1f} ms per step " \
           f"({step['eager'] / step['compiled']:.2f}x)"


def _losses(out):
    return [record["loss"] for record in read_log(out, "train")]


def _expect(condition, message):
    if not condition:
        raise AssertionError(message)
