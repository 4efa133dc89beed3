"""What a run leaves behind (rank 0 only): report.json and its summary on the console, a console line and a
log.jsonl record per print window, TensorBoard scalars when tensorboard is installed (else a notice saying so)."""
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.atomic import write_atomically
from trainer.meter import Window

# The guide's report keys in the guide's order, grouped as the end of a run prints them: the run, its accuracy
# and device, its speed.
REPORT_LINES = (("model", "local_rank", "batch_size", "epochs", "training_step_per_epoch", "eval_step_per_epoch"),
                ("acc1_best", "acc5_best", "device", "skip_steps"),
                ("train_fps_mean", "train_fps_min", "train_fps_max", "training_time"))
REPORT_KEYS = sum(REPORT_LINES, ())
REPORT_FILE = "report.json"
LOG_FILE = "log.jsonl"


class Report(dict):
    """The guide's keys first, in the guide's order, then the rest (world size, loader, FPS per window...)."""

    def summary(self, path):
        """The guide's keys as JSON in a few lines (the per-window figures stay in the file), then the file."""
        lines = (", ".join(f"{json.dumps(key)}: {json.dumps(self[key])}" for key in keys) for keys in REPORT_LINES)
        return "{" + ",\n ".join(lines) + "}\n" + f"full report: {path}"


@dataclass(frozen=True)
class Trained:
    """What a training run measured, summed over its ranks."""
    steps_per_epoch: int
    global_step: int
    best: object         # loop.Best: top-1, top-5 and weights of the best evaluation
    speed: dict          # ThroughputMeter.summary()
    windows: list        # the meter's Windows
    images_skipped: int  # corrupt samples the loader skipped
    val_images: int | None  # of this run's last evaluation; None without one
    training_time: float    # seconds, summed over the run's segments (a resumed run's earlier ones too)


class Totals:
    """What a run's report sums over its segments, carried in each checkpoint (`state`, under "totals"): the training
    time, the timed windows (so the FPS figures are over every timed step of the run), the images skipped and the
    last evaluation's image count. A resumed run starts from the checkpoint's; a checkpoint without them (older ones)
    starts from nothing. Work done after the checkpoint and lost to a kill is timed again when it is redone."""

    def __init__(self, saved, meter):
        carried = (saved or {}).get("totals") or {}
        self.time_before = carried.get("training_time", 0.0)
        self.skipped_before = carried.get("images_skipped", 0)
        self.val_images = carried.get("val_images")
        self.meter = meter
        meter.windows[:0] = [Window(*window) for window in carried.get("windows", ())]
        self.started = time.perf_counter()

    def training_time(self):
        return self.time_before + time.perf_counter() - self.started

    def state(self, skipped):
        """What a checkpoint carries; `skipped`: this segment's images skipped, summed over the ranks."""
        windows = [[w.epoch, w.step, w.images, w.seconds, w.data_wait, w.resolution] for w in self.meter.windows]
        return {"training_time": self.training_time(), "images_skipped": self.skipped_before + skipped,
                "val_images": self.val_images, "windows": windows}


@dataclass(frozen=True)
class Evaluated:
    """What an evaluation-only run measured."""
    evaluation: object   # a loop.Evaluation
    eval_time: float


def run_report(config, ctx, run, eval_steps):
    """The report of a run, Trained or Evaluated (only): the guide's keys, the world size, then what the run was and
    measured. An evaluation-only run trained no epoch and timed no step."""
    if isinstance(run, Trained):
        epochs, steps, speed, training_time = config.epochs, run.steps_per_epoch, run.speed, run.training_time
        acc1, acc5 = run.best.acc1, run.best.acc5
        rest = dict(global_batch_size=config.batch_size * ctx.world_size * config.accumulate, loader=config.loader,
                    accumulate=config.accumulate, amp=config.amp,
                    channels_last=config.channels_last, compile=config.compile, lr=config.lr,
                    lr_schedule=config.lr_schedule, global_step=run.global_step, best_weights=run.best.weights,
                    data_wait_share=_round(speed["data_wait_share"]), images_skipped=run.images_skipped,
                    counted_images=speed["counted_images"], val_images=run.val_images,
                    recipe=config.recipe, crop_size=config.crop_size, val_crop_size=config.val_crop_size,
                    val_size=config.val_size, progressive=_ramp(config),
                    train_fps_windows=[[w.step, _round(w.fps), w.resolution] for w in run.windows])
    else:
        result = run.evaluation
        epochs, steps, speed, training_time = 0, 0, {}, 0.0
        acc1, acc5 = result.acc1, result.acc5
        rest = dict(loader=config.loader, amp=config.amp, val_images=result.images, val_loss=result.loss,
                    eval_time=_round(run.eval_time), checkpoint=None if config.evaluate_untrained else config.resume,
                    val_crop_size=config.val_crop_size, val_size=config.val_size)
    return make_report(
        model=config.model, local_rank=ctx.local_rank, batch_size=config.batch_size, epochs=epochs,
        training_step_per_epoch=steps, eval_step_per_epoch=eval_steps, acc1_best=_round(acc1),
        acc5_best=_round(acc5), device=str(ctx.device), skip_steps=config.skip_steps,
        train_fps_mean=_round(speed.get("fps_mean")), train_fps_min=_round(speed.get("fps_min")),
        train_fps_max=_round(speed.get("fps_max")), training_time=_round(training_time), world_size=ctx.world_size,
        **rest)


def _ramp(config):
    """Progressive resizing as run, None without it."""
    if config.min_res is None:
        return None
    return dict(min_res=config.min_res, max_res=config.crop_size, start_ramp=config.start_ramp,
                end_ramp=config.end_ramp, res_multiple=config.res_multiple)


def banner(config, ctx, model, train, val):
    """What the run is, said once at its start: the model, where it runs, the loader, the data and what an epoch is,
    the output directory."""
    params = sum(p.numel() for p in model.parameters())
    where = f"{ctx.world_size} processes" if ctx.world_size > 1 else "1 process"
    workers = "default workers" if config.workers is None else f"{config.workers} worker(s)"
    lines = [f"{config.model} ({params / 1e6:.1f} M parameters) on {ctx.device.type}, {where}, AMP {config.amp}; "
             f"loader {config.loader} ({workers} per process)"]
    data = f"data {config.data_path}: "
    if train is not None:
        steps, batch = len(train) // config.accumulate, config.batch_size * ctx.world_size * config.accumulate
        data += f"{train.samples:,} train samples, {steps:,} steps of {batch:,} per epoch, {config.epochs} epochs; "
    lines.append(data + f"{val.samples:,} val samples at {config.val_crop_size} px; output {config.output_dir}")
    return "\n".join(f"trainer: {line}" for line in lines)


def make_report(**fields):
    report = Report((key, fields.pop(key)) for key in REPORT_KEYS)
    report.update(fields)
    return report


def read_report(output_dir):
    return json.loads((Path(output_dir) / REPORT_FILE).read_text())


def read_log(output_dir, phase=None):
    """The records of a run's log.jsonl, in order: all, or those of `phase` (train, val, val_ema, epoch)."""
    records = map(json.loads, (Path(output_dir) / LOG_FILE).read_text().splitlines())
    return [record for record in records if phase is None or record["phase"] == phase]


def write_report(output_dir, report):
    path = Path(output_dir) / REPORT_FILE
    write_atomically(path, json.dumps(report, indent=1) + "\n")
    return path


class RunLog:
    def __init__(self, output_dir, enabled, append, val_at=None, last_step=None):
        """`append` for a resumed run, which goes on with the log of the run it resumes; `val_at`: (crop, resize) of
        the validation images, said on each validation line; `last_step`: the global step the run ends at, which
        the progress lines' ETA counts down to."""
        self.enabled = enabled
        self.val_at = val_at
        self.last_step = last_step
        self.started = time.perf_counter()
        self._pace_from = None  # (time, global step) of this segment's first progress line: its pace is since then
        self._epoch_started = None
        if enabled:
            self.jsonl = open(Path(output_dir) / LOG_FILE, "a" if append else "w")  # noqa: SIM115 (open all run)
            self.tensorboard = _summary_writer(Path(output_dir) / "tensorboard")

    def train(self, epoch, step, steps, global_step, loss, lr, window):
        if not self.enabled:
            return
        speed = "img/s (skipped steps)"
        if window:
            at = f"  at {window.resolution} px" if window.resolution else ""
            speed = f"img/s {window.fps:9.1f}  data-wait {window.wait_share:4.0%}{at}"
        print(f"epoch {epoch} step {step}/{steps}  loss {loss:.4f}  lr {lr:.4g}  {speed}{self._eta(global_step)}",
              flush=True)
        record = {"loss": loss, "lr": lr}
        if window:
            record.update(img_s=window.fps, data_wait_share=window.wait_share, resolution=window.resolution)
        self._write("train", record, epoch, global_step)

    def _eta(self, global_step):
        """"  eta H:MM:SS" to the run's last step at this segment's pace (evaluations included as they come), once
        there is a pace."""
        now = time.perf_counter()
        if self._pace_from is None:
            self._pace_from = (now, global_step)
            return ""
        since, first = self._pace_from
        if self.last_step is None or global_step <= first:
            return ""
        left = max(self.last_step - global_step, 0) * (now - since) / (global_step - first)
        return f"  eta {tqdm.format_interval(left)}"

    def epoch_started(self):
        self._epoch_started = time.perf_counter()

    def epoch_trained(self, epoch, global_step, steps):
        """The line and record of an epoch's training time (this segment's part of it, when it was resumed)."""
        if not self.enabled or self._epoch_started is None:
            return
        seconds = time.perf_counter() - self._epoch_started
        print(f"epoch {epoch} trained in {tqdm.format_interval(seconds)} ({steps} steps)", flush=True)
        self._write("epoch", {"seconds": round(seconds, 3), "steps": steps}, epoch, global_step)

    def eval(self, epoch, global_step, result, phase="val"):
        """`result`: a loop.Evaluation; `phase` val, or val_ema for the averaged weights."""
        if not self.enabled:
            return
        which = " (EMA)" if phase == "val_ema" else ""
        print(f"epoch {epoch} {validation_line(result, *(self.val_at or (None, None)), which=which)}", flush=True)
        self._write(phase, result._asdict(), epoch, global_step)

    def close(self):
        if self.enabled:
            self.jsonl.close()
            if self.tensorboard:
                self.tensorboard.close()

    def _write(self, phase, record, epoch, global_step):
        seconds = round(time.perf_counter() - self.started, 3)  # since this process started training: the time axis
        self.jsonl.write(json.dumps({"phase": phase, "epoch": epoch, "global_step": global_step, "seconds": seconds,
                                     **record}) + "\n")
        self.jsonl.flush()
        if self.tensorboard:
            for name, value in record.items():
                self.tensorboard.add_scalar(f"{phase}/{name}", value, global_step)


def validation_line(result, crop=None, size=None, which=""):
    """`result` (a loop.Evaluation) as the console says it, with the centre crop and the resize it was taken at."""
    if result.acc1 is None:
        figures = "no images"
    else:
        figures = (f"acc@1 {result.acc1:.3f}  acc@5 {result.acc5:.3f}  loss {result.loss:.4f}  over {result.images} "
                   "images")
    at = f" at {crop} px (resized to {size})" if crop else ""
    return f"validation{which}  {figures}{at}"


def _summary_writer(log_dir):
    """TensorBoard's writer; None, said once, when tensorboard is not installed: it is optional."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("trainer: no TensorBoard scalars, tensorboard is not installed (pip install "
              "'imagenet-feed[tensorboard]'); log.jsonl has the same figures", flush=True)
        return None
    return SummaryWriter(log_dir)


def _round(value, digits=3):
    return None if value is None else round(value, digits)
