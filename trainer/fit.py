"""The whole run, top to bottom: set up (resuming if asked), train and evaluate epoch by epoch with a checkpoint
after each, report. `main(argv)` returns the report dict, so benchmarks can run the trainer in-process."""
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline import make_loader
from trainer import checkpoint, distributed, launch
from trainer.checkpoint import CheckpointError
from trainer.args import FlagError, build_parser, parse_args
from trainer.loop import Training, evaluate, train_epoch
from trainer.meter import Clock, ThroughputMeter
from trainer.model import build_model
from trainer.optim import build_optimizer, build_scheduler
from trainer.report import RunLog, make_report, write_report

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MODEL_KEYS = ("model", "num_classes")
# What fixes the schedule and the data order: a resumed run keeps the checkpoint's values.
RUN_KEYS = MODEL_KEYS + ("batch_size", "epochs", "training_step_per_epoch", "lr", "lr_schedule", "warmup_epochs",
                         "momentum", "weight_decay", "nesterov", "no_bn_weight_decay", "label_smoothing", "seed",
                         "crop_size")


def main(argv=None):
    return launch.run(parse_args(argv), fit)


def fit(args, ctx):
    out = Path(args.output_dir)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
    saved = _load_checkpoint(args, ctx)
    args.lr = args.lr or 0.1 * args.batch_size * ctx.world_size / 256
    _seed(args.seed + ctx.rank)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = AMP_DTYPES[args.amp]
    train_loader, val_loader = _loaders(args, ctx, amp_dtype)
    model = build_model(args.model, args.num_classes or val_loader.num_classes, ctx.device, args.channels_last)
    if saved:
        _load_model(model, saved, args)
    eval_model = torch.compile(model) if args.compile else model
    eval_steps = len(val_loader)  # the loaders are capped by the step flags already
    if args.evaluate:
        report = _evaluate_only(args, ctx, eval_model, val_loader, eval_steps, amp_dtype)
    else:
        t = _training(args, ctx, model, len(train_loader), saved, amp_dtype)
        report = _train(args, ctx, out, t, train_loader, eval_model, val_loader, eval_steps, saved)
    if ctx.main:
        path = write_report(out, report)
        print(report.summary(path), flush=True)
    return report


def _training(args, ctx, model, steps_per_epoch, saved, amp_dtype):
    """Optimizer, schedule, scaler and the DDP/compiled step model, at the checkpoint's position if resuming."""
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(ctx.device.type, init_scale=args.loss_scale or 2.0**16, enabled=args.amp == "fp16")
    position = (saved["epoch"], saved["step"]) if saved else (0, 0)
    if args.start_epoch is not None:
        position = (args.start_epoch, 0)
    if saved:
        if saved["steps_per_epoch"] != steps_per_epoch:
            raise FlagError(f"trainer: --resume: the checkpoint has {saved['steps_per_epoch']} steps per epoch, this "
                            f"run {steps_per_epoch}; resume with the same world size, batch size and data")
        optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
    global_step = position[0] * steps_per_epoch + position[1]
    scheduler = build_scheduler(optimizer, args.lr_schedule, args.epochs, steps_per_epoch, args.warmup_epochs,
                                first_step=global_step)
    if saved and args.start_epoch is None:
        scheduler.load_state_dict(saved["scheduler"])
    step_model = model
    if ctx.world_size > 1:
        step_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if args.compile:
        step_model = torch.compile(step_model)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    return Training(model, step_model, criterion, optimizer, scheduler, scaler, ctx.device, amp_dtype,
                    steps_per_epoch, *position, static_loss_scale=args.loss_scale, check_syncs=args.check_syncs)


def _train(args, ctx, out, t, train_loader, eval_model, val_loader, eval_steps, saved):
    meter = ThroughputMeter(Clock(ctx.device), args.batch_size * ctx.world_size, args.skip_steps)
    log = RunLog(out, ctx.main, append=saved is not None)
    best = (saved["acc1_best"], saved["acc5_best"]) if saved else (None, None)
    rng = saved["rng"][ctx.rank] if saved and len(saved["rng"]) == ctx.world_size else None
    val_images = None

    def save(epoch_rng, is_best=False):
        state = {**t.state_dict(), "acc1_best": best[0], "acc5_best": best[1], "args": vars(args),
                 "rng": distributed.gather_objects({"epoch": epoch_rng, "step": checkpoint.rng_state(ctx.device)})}
        if ctx.main:
            checkpoint.save(out, state, is_best)

    def stop_reached():
        return args.stop_step_num is not None and t.global_step >= args.stop_step_num

    started = time.perf_counter()
    if stop_reached():
        _say(ctx, f"trainer: already at step {t.global_step} >= --stop-step-num {args.stop_step_num}; nothing to train")
    while t.epoch < args.epochs and not stop_reached():
        batches, epoch_rng = _epoch_batches(train_loader, t, rng, ctx.device)
        rng = None
        train_epoch(t, batches, meter, log, args.print_freq, args.stop_step_num)
        del batches
        if t.step < t.steps_per_epoch:
            save(epoch_rng)
            _say(ctx, f"trainer: stopped at global step {t.global_step} (epoch {t.epoch}, step {t.step}); "
                      f"--resume {out / checkpoint.LATEST} goes on from there")
            break
        is_best = False
        if (t.epoch + 1) % args.eval_freq == 0 or t.epoch + 1 == args.epochs:
            distributed.broadcast_buffers(t.model)  # every rank evaluates what the checkpoint holds: rank 0's
            result = evaluate(eval_model, val_loader, ctx.device, t.amp_dtype)
            log.eval(t.epoch, t.global_step, result)
            val_images = result.images
            is_best = result.acc1 is not None and (best[0] is None or result.acc1 > best[0])
            best = (result.acc1, result.acc5) if is_best else best
        t.epoch, t.step = t.epoch + 1, 0
        save(checkpoint.rng_state(ctx.device), is_best)
    training_time = time.perf_counter() - started
    log.close()
    return _train_report(args, ctx, t, meter, best, val_images, eval_steps, train_loader.skipped, training_time)


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


def _train_report(args, ctx, t, meter, best, val_images, eval_steps, images_skipped, training_time):
    summary = meter.summary()
    images_skipped = distributed.sum_over_ranks([images_skipped], ctx.device)[0]
    return make_report(
        model=args.model, local_rank=ctx.local_rank, batch_size=args.batch_size, epochs=args.epochs,
        training_step_per_epoch=t.steps_per_epoch, eval_step_per_epoch=eval_steps, acc1_best=_round(best[0]),
        acc5_best=_round(best[1]), device=str(ctx.device), skip_steps=args.skip_steps,
        train_fps_mean=_round(summary["fps_mean"]), train_fps_min=_round(summary["fps_min"]),
        train_fps_max=_round(summary["fps_max"]), training_time=_round(training_time),
        world_size=ctx.world_size, global_batch_size=args.batch_size * ctx.world_size, loader=args.loader,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile, lr=args.lr,
        lr_schedule=args.lr_schedule, global_step=t.global_step, data_wait_share=_round(summary["data_wait_share"]),
        images_skipped=int(images_skipped), counted_images=summary["counted_images"], val_images=val_images,
        train_fps_windows=[[w.step, _round(w.fps)] for w in meter.windows])


def _evaluate_only(args, ctx, eval_model, val_loader, eval_steps, amp_dtype):
    if not args.resume:
        _say(ctx, "trainer: --evaluate without --resume evaluates randomly initialised weights")
    started = time.perf_counter()
    result = evaluate(eval_model, val_loader, ctx.device, amp_dtype)
    return make_report(
        model=args.model, local_rank=ctx.local_rank, batch_size=args.batch_size, epochs=0, training_step_per_epoch=0,
        eval_step_per_epoch=eval_steps, acc1_best=_round(result.acc1), acc5_best=_round(result.acc5),
        device=str(ctx.device), skip_steps=args.skip_steps, train_fps_mean=None, train_fps_min=None,
        train_fps_max=None, training_time=0.0, world_size=ctx.world_size, loader=args.loader, amp=args.amp,
        val_images=result.images, val_loss=result.loss, eval_time=_round(time.perf_counter() - started),
        checkpoint=args.resume)


def _loaders(args, ctx, amp_dtype):
    common = dict(device=ctx.device, dtype=amp_dtype or torch.float32, channels_last=args.channels_last,
                  crop_size=args.crop_size, val_size=args.val_size, workers=args.workers, seed=args.seed,
                  num_classes=args.num_classes or 1000)
    train = None
    if not args.evaluate:
        train = make_loader(args.data_path, "train", args.loader, args.batch_size,
                            steps=_positive(args.training_step_per_epoch), **common)
        _check_fits(args, ctx, train)
    val = make_loader(args.data_path, "val", args.loader, args.batch_size,
                      steps=_positive(args.eval_step_per_epoch), **common)
    return train, val


def _check_fits(args, ctx, train):
    """The flags that only the data can refute."""
    share = train.samples // ctx.world_size
    if not len(train):
        raise FlagError(f"trainer: --batch-size {args.batch_size} leaves no training step: each of the "
                        f"{ctx.world_size} rank(s) has {share} train samples of {args.data_path}, so the largest "
                        f"batch that trains is {share}")
    if args.num_classes is not None and args.num_classes < train.num_classes:
        raise FlagError(f"trainer: --num_classes {args.num_classes} is below the dataset's {train.num_classes}")
    if args.skip_steps >= len(train):
        _say(ctx, f"trainer: --skip_steps {args.skip_steps} covers all {len(train)} steps of an epoch: no step is "
                  "timed, so the report has no train_fps_*")


def _load_model(model, saved, args):
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:  # the names and shapes do not match
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"trainer: --resume {args.resume}: its weights do not fit {args.model} "
                              f"({first})") from None


def _load_checkpoint(args, ctx):
    """The --resume checkpoint, with its run settings adopted (a resumed run ends where the first would have)."""
    if not args.resume:
        return None
    try:
        saved = checkpoint.load(args.resume)
        saved_args = saved["args"]
    except Exception as error:  # any unreadable file is the same damaged input
        raise CheckpointError(f"trainer: --resume {args.resume}: not a trainer checkpoint "
                              f"({type(error).__name__})") from None
    defaults = build_parser()
    for key in MODEL_KEYS if args.evaluate else RUN_KEYS:
        given = getattr(args, key)
        if given != saved_args[key] and given != defaults.get_default(key):
            _say(ctx, f"trainer: resume keeps the checkpoint's {key}={saved_args[key]!r} (not {given!r})")
        setattr(args, key, saved_args[key])
    return saved


def _positive(steps):
    """-1 (the whole epoch) means no cap; more steps than an epoch has are capped by the loader."""
    return steps if steps > 0 else None


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _say(ctx, message):
    if ctx.main:
        print(message, flush=True)


def _round(value, digits=3):
    return None if value is None else round(value, digits)
