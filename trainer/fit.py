"""The whole run, top to bottom: set up (resuming if asked), train and evaluate epoch by epoch with a checkpoint
after each, report. `main(argv)` returns the report dict, so benchmarks can run the trainer in-process."""
import functools
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint, distributed, launch, resume
from trainer.args import parse_args
from trainer.loaders import build_loaders
from trainer.loop import Training, evaluate, train_epoch
from trainer.meter import Clock, ThroughputMeter
from trainer.model import build_model
from trainer.optim import build_optimizer, build_scheduler
from trainer.report import Evaluated, RunLog, Trained, run_report, write_report


def main(argv=None):
    return launch.run(parse_args(argv), fit)


def fit(config, ctx):
    """This process's part of the run: `config` from the command line, `ctx` its place in the group."""
    if ctx.main:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    config, saved = resume.load(config, ctx)
    config = config.with_default_lr(ctx.world_size)
    _seed(config.seed + ctx.rank)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_loader, val_loader = build_loaders(config, ctx)
    model = build_model(config.model, config.num_classes or val_loader.num_classes, ctx.device, config.channels_last)
    if saved:
        resume.load_weights(model, saved, config)
    eval_model = torch.compile(model) if config.compile else model
    validate = functools.partial(evaluate, eval_model, val_loader, ctx.device, config.amp_dtype)
    if config.evaluate:
        run = _evaluate_only(config, ctx, validate)
    else:
        training = _training(config, ctx, model, len(train_loader), saved)
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
    epoch, step = resume.position(saved, config.start_epoch)
    if saved:
        resume.load_training_state(saved, steps_per_epoch, optimizer, scaler)
    scheduler = build_scheduler(optimizer, config.lr_schedule, config.epochs, steps_per_epoch, config.warmup_epochs,
                                first_step=epoch * steps_per_epoch + step)
    if saved and config.start_epoch is None:
        scheduler.load_state_dict(saved["scheduler"])
    step_model = model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        step_model = DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        step_model = torch.compile(step_model)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return Training(model, step_model, criterion, optimizer, scheduler, scaler, ctx.device, config.amp_dtype,
                    steps_per_epoch, epoch, step, static_loss_scale=config.loss_scale, check_syncs=config.check_syncs)


def _train(config, ctx, t, train_loader, validate, saved):
    """Epochs from t's position to the last, or to --stop-step-num, each evaluated (every --eval-freq) and
    checkpointed; a Trained."""
    out = Path(config.output_dir)
    meter = ThroughputMeter(Clock(ctx.device), config.batch_size * ctx.world_size, config.skip_steps)
    log = RunLog(out, ctx.main, append=saved is not None)
    best = (saved["acc1_best"], saved["acc5_best"]) if saved else (None, None)
    rng = resume.rng_states(saved, ctx)
    val_images = None
    started = time.perf_counter()
    if _stop_reached(config, t):
        ctx.say(f"trainer: already at step {t.global_step} >= --stop-step-num {config.stop_step_num}; nothing to train")
    while t.epoch < config.epochs and not _stop_reached(config, t):
        batches, epoch_rng = _epoch_batches(train_loader, t, rng, ctx.device)
        rng = None
        train_epoch(t, batches, meter, log, config.print_freq, config.stop_step_num)
        del batches
        if t.step < t.steps_per_epoch:
            _save(config, ctx, t, best, epoch_rng)
            ctx.say(f"trainer: stopped at global step {t.global_step} (epoch {t.epoch}, step {t.step}); "
                    f"--resume {out / checkpoint.LATEST} goes on from there")
            break
        is_best = False
        if (t.epoch + 1) % config.eval_freq == 0 or t.epoch + 1 == config.epochs:
            distributed.broadcast_buffers(t.model)  # every rank evaluates what the checkpoint holds: rank 0's
            result = validate()
            log.eval(t.epoch, t.global_step, result)
            val_images = result.images
            is_best = result.acc1 is not None and (best[0] is None or result.acc1 > best[0])
            best = (result.acc1, result.acc5) if is_best else best
        t.epoch, t.step = t.epoch + 1, 0
        _save(config, ctx, t, best, checkpoint.rng_state(ctx.device), is_best)
    training_time = time.perf_counter() - started
    log.close()
    images_skipped = int(distributed.sum_over_ranks([train_loader.skipped], ctx.device)[0])
    return Trained(steps_per_epoch=t.steps_per_epoch, global_step=t.global_step, best=best, speed=meter.summary(),
                   windows=meter.windows, images_skipped=images_skipped, val_images=val_images,
                   training_time=training_time)


def _stop_reached(config, t):
    return config.stop_step_num is not None and t.global_step >= config.stop_step_num


def _save(config, ctx, t, best, epoch_rng, is_best=False):
    """checkpoint.pth (and model_best.pth) at t's position. Every rank takes part: each one's RNG states go in."""
    rng = distributed.gather_objects({"epoch": epoch_rng, "step": checkpoint.rng_state(ctx.device)})
    # The settings go under "args", where checkpoints from before the RunConfig hold vars(args) by the same names.
    state = {**t.state_dict(), "acc1_best": best[0], "acc5_best": best[1], "args": config.to_checkpoint(), "rng": rng}
    if ctx.main:
        checkpoint.save(Path(config.output_dir), state, is_best)


def _epoch_batches(train_loader, t, rng, device):
    """An iterator over epoch t.epoch positioned at step t.step, and the RNG state the epoch started from.

    Resuming (rng given) restores the generators as they were when the epoch started, so the loader draws the
    same data order, then as they were at the saved step, so training continues exactly as an unbroken run."""
    train_loader.set_epoch(t.epoch)
    if rng:
        checkpoint.set_rng_state(rng["epoch"], device)
    epoch_rng = checkpoint.rng_state(device)
    batches = iter(train_loader)
    for _ in range(t.step):  # resumed mid-epoch: skip the batches this epoch already trained on
        next(batches)
    if rng and t.step:
        checkpoint.set_rng_state(rng["step"], device)
    return batches, epoch_rng


def _evaluate_only(config, ctx, validate):
    if not config.resume:
        ctx.say("trainer: --evaluate without --resume evaluates randomly initialised weights")
    started = time.perf_counter()
    result = validate()
    return Evaluated(evaluation=result, eval_time=time.perf_counter() - started)


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
