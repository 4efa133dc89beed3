"""`python -m bench doctor --full`: the doctor's checks, then what a first run on a GPU machine must also show, in
one command, each through the trainer's public entry points (trainer.configure/run, `python -m trainer`):
- the training methods under the host-sync guard: EMA, mixup + CutMix, progressive resizing (the img/s of each
  resolution), --accumulate;
- a run stopped mid-epoch and resumed ends with the weights of the unbroken run (bit for bit, or the largest
  difference said);
- SIGTERM mid-run: a checkpoint, exit status 75, and the same command goes on from it;
- DDP with torch.compile, bf16 AMP and channels_last over 2 GPUs (in place of the doctor's plain DDP run on a CPU:
  two gloo processes, bf16 and channels_last, no compile);
- the `cpu` loader's batch ring at the throughput runs' size (batch 256 at 224 on a GPU, page-locked): a whole pass,
  one left early, another whole one, and nothing left behind (worker processes, shared memory) once it is dropped;
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
import gc
import io
import math
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import pipeline
import trainer
from bench.train import trainer_config
from pipeline import memory
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
DDP_RANKS = 2
RING_STEPS, RING_EARLY = 12, 3  # the ring check's whole passes (capped there), and where its early pass is left


def full_checks(args, scratch, data, checked, run, measured):
    """The rows of the acceptance's checks; `data`: the doctor's colour-coded shards, `checked`: its Row maker;
    `run` and `measured`: its throughput runs' settings and reports."""
    sizes = SIZES[args.device.type]
    for name, settings in _methods(sizes).items():
        yield checked(f"method {name}", lambda settings=settings, name=name: _method(args, sizes, settings,
                                                                                    scratch / f"method-{name}"))
    yield checked("stop mid-epoch, resume: the unbroken run's weights", lambda: _resume(args, data, scratch))
    yield checked("SIGTERM: checkpoint, exit 75, the same command goes on", lambda: _sigterm(args, scratch))
    yield checked("cpu loader ring: whole pass, pass left early, nothing left", lambda: _ring(args, run))
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


def ddp_methods(args, scratch, checked):
    """DDP with what a GPU run adds: torch.compile, bf16 autocast and channels_last, over DDP_RANKS GPUs (nccl); with
    one GPU not run; on a CPU over two gloo processes, without compile (minutes of C++ builds in each)."""
    from bench.doctor import NOT_RUN, Row, ddp_run  # here, not at the top: the doctor imports this module

    cuda = args.device.type == "cuda"
    gpus = torch.cuda.device_count() if cuda else 0
    name = f"ddp {'nccl' if cuda else 'gloo'}, {DDP_RANKS} ranks: {'compiled, ' if cuda else ''}amp bf16, channels_last"
    if cuda and gpus < DDP_RANKS:
        return Row(name, NOT_RUN, f"not run (one GPU): needs {DDP_RANKS}, this machine has {gpus}")
    unlike = "" if cuda else "; not compiled on a CPU (minutes of C++ builds per process)"
    return checked(name, lambda: ddp_run(args, DDP_RANKS, scratch / "ddp-methods", amp="bf16", channels_last=True,
                                         compile=cuda) + unlike)


def _ring(args, run):
    """The cpu loader's batch ring at the throughput runs' size (with --full on a GPU: batch 256 at 224, in bf16
    channels_last, its ring page-locked): a whole pass, one left after RING_EARLY batches, another whole one; then
    dropped, it leaves no worker process, ring or resident shared memory behind."""
    from bench.doctor import speed_data  # here, not at the top: the doctor imports this module

    dtype = torch.bfloat16 if run.amp == "bf16" else torch.float32
    before = _leftovers()
    loader = _ring_loader(speed_data(args, run), run, args.device, dtype)
    taken = [_ring_pass(loader, epoch, args.device, dtype, stop) for epoch, stop in enumerate((None, RING_EARLY, None))]
    whole, during = len(loader), _leftovers()
    workers, ring = during[0] - before[0], during[1] - before[1]
    _expect(taken == [whole, RING_EARLY, whole], f"batches per pass {taken}, expected {[whole, RING_EARLY, whole]}")
    _expect(len(workers) >= 1, "the loader runs no worker process")
    del loader
    gc.collect()  # as the garbage collector would, sooner or later: what the loader holds must go with it
    after = _leftovers()
    left = workers & after[0]
    _expect(not left, f"worker processes {sorted(left)} still run once the loader was dropped")
    _expect(after[1] <= before[1], f"{(after[1] - before[1]) / 2**20:.1f} MiB of rings still held once dropped")
    shm = "" if after[2] is None else f", resident shared memory {(after[2] - before[2]) / 2**20:+.1f} MiB"
    _expect(after[2] is None or after[2] - before[2] < ring / 2, f"the ring's memory stays mapped{shm}")
    size = f"batch {run.batch_size} at {run.crop_size} px, {str(dtype).removeprefix('torch.')}"
    where = ", ring page-locked" if args.device.type == "cuda" else \
        " (reduced on the CPU dry run; a GPU's is batch 256 at 224, page-locked)"
    return f"{size}{where}: passes of {taken} batches; {len(workers)} workers, a {ring / 2**20:.0f} MiB ring: " \
           f"none left once dropped{shm}"


def _ring_loader(data, run, device, dtype):
    options = pipeline.DataOptions(loader="cpu", batch_size=run.batch_size, crop_size=run.crop_size,
                                   val_size=round(run.crop_size * 8 / 7), workers=run.workers)
    return pipeline.make_loader(data, "train", options, device=device, dtype=dtype, channels_last=run.channels_last,
                                max_steps=RING_STEPS)


def _ring_pass(loader, epoch, device, dtype, stop):
    """The batches of one pass taken (all, or the first `stop`, leaving the pass as a training loop's break does),
    each checked: on `device`, in `dtype`, finite, int64 labels."""
    loader.set_epoch(epoch)
    taken = 0
    for images, labels in loader:
        _expect(images.device.type == device.type and images.dtype == dtype and labels.dtype == torch.int64,
                f"a batch of {images.dtype} on {images.device}, labels {labels.dtype}")
        _expect(bool(torch.isfinite(images).all()), f"pass {epoch}, batch {taken}: values that are not finite")
        taken += 1
        if taken == stop:
            break
    return taken


def _leftovers():
    """(This process's child processes' pids, the bytes of cpu loader rings it holds (pipeline.memory), its resident
    shared memory in bytes or None where /proc does not say)."""
    pids = {child.pid for child in multiprocessing.active_children()}
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return pids, memory.held(), None
    shmem = next((line.split()[1] for line in status.splitlines() if line.startswith("RssShmem:")), None)
    return pids, memory.held(), None if shmem is None else int(shmem) * 1024


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
