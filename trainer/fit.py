"""The whole run, top to bottom: set up (resuming where a checkpoint says), train and evaluate epoch by epoch with a
checkpoint after each (and every --checkpoint-every), stop cleanly on a signal, report. `main(argv)` returns the
report dict, so benchmarks can run the trainer in-process."""
import functools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint, distributed, launch, resume
from trainer.args import parse_args
from trainer.data import build_loaders
from trainer.ema import EMA
from trainer.loop import Best, Training, evaluate, train_epoch
from trainer.meter import Clock, ThroughputMeter
from trainer.mixing import Mixing
from trainer.model import build_model
from trainer.optim import Schedule, build_optimizer
from trainer.preempt import EXIT_PREEMPTED, Stop
from trainer.report import (
    REPORT_FILE,
    Evaluated,
    Report,
    RunLog,
    Totals,
    Trained,
    banner,
    run_report,
    validation_line,
    write_report,
)
from trainer.resolution import train_resolution
from trainer.samples import SampleLog


def main(argv=None):
    return run(parse_args(argv))


def run(config):
    """The run `config` describes (trainer.configure, or the command line's), in this process or the processes it
    spawns; the report."""
    return launch.run(config, fit)


def fit(config, ctx):
    """This process's part of the run: `config` from the command line, `ctx` its place in the group."""
    if ctx.main:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    config, saved = resume.load(config, ctx)
    config = config.with_default_lr(ctx.world_size)
    _seed(config.seed + ctx.rank)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config, train_loader, val_loader = build_loaders(config, ctx)
    model = build_model(config.model, config.num_classes or val_loader.num_classes, ctx.device, config.channels_last)
    resume.load_weights(model, saved, config)
    ctx.say(banner(config, ctx, model, train_loader, val_loader))
    eval_model = torch.compile(model) if config.compile else model
    def validate(weights=eval_model):
        return evaluate(weights, val_loader, ctx.device, config.amp_dtype)

    if config.evaluate:
        run = _evaluate_only(config, ctx, validate)
    else:
        training = _training(config, ctx, model, len(train_loader) // config.accumulate, saved)
        if _finished(config, training):
            return _nothing_to_train(config, ctx, training, saved, eval_steps=len(val_loader))
        run = _train(config, ctx, training, train_loader, validate, saved)
    report = run_report(config, ctx, run, eval_steps=len(val_loader))  # the loaders are capped by the step flags
    if ctx.main:
        path = write_report(config.output_dir, report)
        print(report.summary(path), flush=True)
    return report


def _training(config, ctx, model, steps_per_epoch, saved):
    """Optimizer, schedule, scaler and the DDP/compiled step model, at the checkpoint's position if resuming."""
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(ctx.device.type, init_scale=config.loss_scale or 2.0**16,
                                  enabled=config.amp == "fp16")
    schedule = Schedule(optimizer, config.lr_schedule, config.epochs, config.warmup_epochs)
    if saved:
        resume.load_training_state(saved, optimizer, scaler)
    step_model = model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        step_model = DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        step_model = torch.compile(step_model)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    ema = EMA(model, config.ema, config.ema_every) if config.ema else None
    if ema and saved and saved.get("ema"):  # else a new average starts from the weights resumed
        ema.load_state_dict(saved["ema"])
    mixing = Mixing(config.mixup, config.cutmix, config.switch_prob, config.seed, ctx.rank) \
        if config.mixup or config.cutmix else None
    return Training(model, step_model, criterion, optimizer, schedule, scaler, ctx.device, config.amp_dtype,
                    global_batch=config.batch_size * ctx.world_size * config.accumulate,
                    accumulate=config.accumulate, steps_per_epoch=steps_per_epoch,
                    position=resume.position(saved, config.start_epoch, steps_per_epoch),
                    static_loss_scale=config.loss_scale, check_syncs=config.check_syncs, mixing=mixing, ema=ema,
                    resolution=functools.partial(train_resolution, config))


def _train(config, ctx, t, train_loader, validate, saved):
    """Epochs from t's position to the last, each evaluated (every --eval-freq) and checkpointed; stopped early by
    --stop-step-num or a signal (with a checkpoint). A Trained."""
    out = Path(config.output_dir)
    meter = ThroughputMeter(Clock(ctx.device), t.global_batch, config.skip_steps)
    totals = Totals(saved, meter)  # the segments before this one, if resuming: their time, windows, skipped images
    log = RunLog(out, ctx.main, append=saved is not None, val_at=(config.val_crop_size, config.val_size),
                 last_step=_last_step(config, t))
    best = Best.of(saved)
    rng = resume.rng_states(saved, ctx)
    if rng:
        checkpoint.set_rng_state(rng, ctx.device)
    samples = SampleLog(config, ctx, train_loader) if config.log_samples else None
    stop = Stop(config.checkpoint_every_steps, config.checkpoint_every_seconds,
                distributed.peer_timeout(config.data_timeout))
    save = functools.partial(_save, config, ctx, t, stop, totals, train_loader)
    try:
        while t.position.epoch < config.epochs and not _stop_step_reached(config, t):
            log.epoch_started()
            first_step = t.step
            stopped = train_epoch(t, train_loader, meter, log, config.print_freq,
                                  functools.partial(_after_step, config, stop, save, samples, best))
            if stopped:
                save(best)
                _say_stopped(ctx, t, out, stopped, stop)
                if stopped == "signal":
                    raise SystemExit(EXIT_PREEMPTED)
                break
            log.epoch_trained(t.position.epoch, t.position.global_step, t.step - first_step)
            is_best = False
            if (t.position.epoch + 1) % config.eval_freq == 0 or t.position.epoch + 1 == config.epochs:
                results = _evaluate_weights(t, validate, log)
                totals.val_images = results["raw"].images
                best, is_best = best.after(results)
            t.position.epoch, t.position.consumed = t.position.epoch + 1, 0
            save(best, is_best)
    finally:
        stop.close()
        log.close()
        if samples:
            samples.close()
    images_skipped = int(distributed.sum_over_ranks([train_loader.skipped], ctx.device)[0]) + totals.skipped_before
    return Trained(steps_per_epoch=t.steps_per_epoch, global_step=t.position.global_step, best=best,
                   speed=meter.summary(), windows=meter.windows, images_skipped=images_skipped,
                   val_images=totals.val_images, training_time=totals.training_time())


def _last_step(config, t):
    """The global step the run ends at: its last epoch's end, or --stop-step-num before it."""
    last = config.epochs * t.steps_per_epoch
    return last if config.stop_step_num is None else min(last, config.stop_step_num)


def _finished(config, t):
    """Whether the run is already where it ends: its last epoch done, or --stop-step-num reached."""
    return t.position.epoch >= config.epochs or _stop_step_reached(config, t)


def _nothing_to_train(config, ctx, t, saved, eval_steps):
    """A run started again with nothing left to train (a finished run's same command) leaves report.json as the run
    wrote it, and says so; without one (a checkpoint resumed into another --output-dir) it writes the report of the
    figures the checkpoint carries. Returns that report."""
    at = t.position
    if _stop_step_reached(config, t):
        why = f"already at step {at.global_step} >= --stop-step-num {config.stop_step_num}"
    else:
        why = f"{config.resume} is at epoch {at.epoch} of --epochs {config.epochs} (global step {at.global_step})"
    path = Path(config.output_dir) / REPORT_FILE
    if ctx.main and path.exists():
        ctx.say(f"trainer: nothing left to train: {why}; {path} is left as it was (a larger --epochs extends the run)")
        return Report(json.loads(path.read_text()))
    meter = ThroughputMeter(Clock(ctx.device), t.global_batch, config.skip_steps)
    totals = Totals(saved, meter)
    run = Trained(steps_per_epoch=t.steps_per_epoch, global_step=at.global_step, best=Best.of(saved),
                  speed=meter.summary(), windows=meter.windows, images_skipped=totals.skipped_before,
                  val_images=totals.val_images, training_time=totals.time_before)
    report = run_report(config, ctx, run, eval_steps=eval_steps)
    if ctx.main:
        ctx.say(f"trainer: nothing left to train: {why}; {path} written from the figures of the checkpoint")
        print(report.summary(write_report(config.output_dir, report)), flush=True)
    return report


def _evaluate_weights(t, validate, log):
    """{"raw": Evaluation, and "ema" with --ema}. Every rank first takes rank 0's BatchNorm statistics (DDP syncs
    them only at a training forward), so all ranks evaluate what the checkpoint holds."""
    results = {}
    for name, model in (("raw", t.model), *((("ema", t.ema.model),) if t.ema else ())):
        distributed.broadcast_buffers(model)
        results[name] = validate() if name == "raw" else validate(model)  # raw: the compiled model, if --compile
        log.eval(t.position.epoch, t.position.global_step, results[name], phase="val" if name == "raw" else "val_ema")
    return results


def _after_step(config, stop, save, samples, best, t):
    """Why to stop after this step (None: go on); a periodic checkpoint when one is due mid-epoch."""
    if samples:
        samples.step(t)
    signalled, due = stop.after_step(t.position.global_step)
    if signalled:
        return "signal"
    if _stop_step_reached(config, t):
        return "stop-step"
    if due and t.step < t.steps_per_epoch:  # an epoch's end checkpoints anyway
        save(best)
    return None


def _stop_step_reached(config, t):
    return config.stop_step_num is not None and t.position.global_step >= config.stop_step_num


def _say_stopped(ctx, t, out, stopped, stop):
    at = f"(epoch {t.position.epoch}, step {t.step})"
    if stopped == "signal":
        ctx.say(f"trainer: stopped on {stop.name} at global step {t.position.global_step} {at}, exit status "
                f"{EXIT_PREEMPTED}; the same command goes on from there")
    else:
        ctx.say(f"trainer: stopped at --stop-step-num {t.position.global_step} {at}; the same command without it, "
                f"or with --resume {out / checkpoint.LATEST}, goes on from there")


def _save(config, ctx, t, stop, totals, train_loader, best, is_best=False):
    """A checkpoint at t's position (and model_best.pth), with the run's totals so far. Every rank takes part: each
    one's RNG states and count of images skipped go in."""
    gathered = distributed.gather_objects((checkpoint.rng_state(ctx.device), train_loader.skipped))
    rng, skipped = [rng for rng, _ in gathered], sum(count for _, count in gathered)
    # The settings go under "args", where checkpoints from before the RunConfig hold vars(args) by the same names.
    state = {**t.state_dict(), **best.state(), "args": config.to_checkpoint(), "rng": rng,
             "totals": totals.state(skipped)}
    if ctx.main:
        path, size, seconds = checkpoint.save(config.output_dir, state, t.position.global_step,
                                              keep=config.keep_checkpoints, is_best=is_best)
        print(f"trainer: checkpoint {path.name}: {size / 1e6:.1f} MB in {seconds:.2f} s", flush=True)
    stop.saved()


def _evaluate_only(config, ctx, validate):
    """The checkpoint's weights (resume.load refuses an evaluation without one), or with --evaluate-untrained
    randomly initialised ones, over the validation set at the validation sizes the config holds; its line said."""
    if config.evaluate_untrained:
        ctx.say("trainer: --evaluate-untrained: evaluating randomly initialised weights, no checkpoint")
    started = time.perf_counter()
    result = validate()
    ctx.say(validation_line(result, config.val_crop_size, config.val_size))
    return Evaluated(evaluation=result, eval_time=time.perf_counter() - started)


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
