"""--resume: the checkpoint chosen and read once (auto: the newest readable one in --output-dir, falling back past a
damaged one), the settings it keeps adopted into the config (the fields RunConfig declares so, and the global
batch), its weights loaded into the model and the training state and position it holds."""
import dataclasses
import os

from common.errors import UsageError
from trainer import checkpoint, weights
from trainer.args import default
from trainer.loop import Position
from trainer.optim import STEP_EPOCHS, lr_factor
from trainer.options import AUTO


def load(config, ctx):
    """(config, saved): the config with the kept settings of the checkpoint to resume from, and that checkpoint;
    (config, None) when there is none: --resume auto in a fresh --output-dir starts a fresh run, --evaluate-untrained
    reads none. An evaluation without a checkpoint, or a --resume directory without one, is refused (UsageError)."""
    if config.evaluate_untrained:
        return config, None
    config = _start_weights(config)
    if config.evaluate and config.start_weights:
        ctx.say(f"trainer: evaluating the weights in {config.start_weights}")
        return config, None
    where = config.output_dir if config.resume == AUTO else config.resume
    paths = checkpoint.candidates(where) if os.path.exists(where) else []
    if not paths and config.resume != AUTO:  # args.py checks it too; this is what the directory holds now
        raise UsageError(f"--resume {where}: no checkpoint there (checkpoint-*.pth, checkpoint.pth)")
    path, saved = checkpoint.newest_readable(paths, ctx.say)
    if saved is None:
        if config.evaluate:
            raise UsageError(f"--evaluate: no checkpoint in --output-dir {config.output_dir} (--resume auto) to "
                             "evaluate; name one with --resume FILE|DIR, give --pretrained for torchvision's weights, "
                             "or --evaluate-untrained to evaluate randomly initialised weights")
        if config.start_weights:
            ctx.say(f"trainer: training starts from the weights in {config.start_weights}, at epoch 0 with a fresh "
                    "optimizer and schedule")
        return config, None
    if config.start_weights:
        ctx.say(f"trainer: --output-dir holds this run's checkpoint {path}: resuming it, not starting again from "
                f"the weights in {config.start_weights}")
    at = saved["position"]
    ctx.say(f"trainer: {'evaluating' if config.evaluate else 'resuming from'} {path}: epoch {at['epoch']}, "
            f"{at['consumed']} of its samples done, global step {at['global_step']}")
    settings, before = saved["args"], saved["args"].get("epochs")
    extends = not config.evaluate and "epochs" in config.given and before is not None and config.epochs > before
    if extends:  # the run goes on to the --epochs asked: the checkpoint's total is not kept
        settings = {name: value for name, value in settings.items() if name != "epochs"}
    config = dataclasses.replace(adopt(config, settings, ctx.say), resume=os.fspath(path))
    if config.evaluate:
        return _val_sizes(config, saved["args"], ctx.say), saved
    if extends:
        _say_extended(config, saved, before, ctx.say)
    return _global_batch(config, saved, ctx), saved


def _start_weights(config):
    """A --resume file that holds only a model's weights (checkpoint.model_weights) is where the run starts, as with
    --pretrained: the config then names it as start_weights and resumes auto, so the same command, started again
    after a stop, goes on from the run's own checkpoint rather than from those weights."""
    if config.resume == AUTO or not os.path.isfile(config.resume):
        return config
    try:
        state = checkpoint.load(config.resume)
    except Exception:  # newest_readable says what is wrong with it
        return config
    if checkpoint.model_weights(state) is None:
        return config
    return dataclasses.replace(config, start_weights=config.resume, resume=AUTO)


def _val_sizes(config, settings, say):
    """An evaluation's config at the checkpoint's validation crop and resize, each unless the command line gave it
    (--val-crop-size, or --crop-size, its default; --val-size): a model is evaluated at the size it was trained for,
    not at the flags' defaults."""
    crop, size = settings.get("val_crop_size") or settings.get("crop_size"), settings.get("val_size")
    taken = {}
    if crop is not None and not {"val_crop_size", "crop_size"} & set(config.given):
        taken["val_crop_size"] = crop
    if size is not None and "val_size" not in config.given:
        taken["val_size"] = size
    config = dataclasses.replace(config, **taken)
    if taken:
        say(f"trainer: evaluation takes the checkpoint's {', '.join(f'{k}={v}' for k, v in taken.items())} "
            "(--val-crop-size / --val-size evaluate at others)")
    if config.val_size < config.val_crop_size:
        raise UsageError(f"--evaluate: validation resize {config.val_size} (--val-size) is below its centre crop "
                         f"{config.val_crop_size} (--val-crop-size); give both (the checkpoint has val_crop_size="
                         f"{crop}, val_size={size})")
    return config


def _say_extended(config, saved, before, say):
    """One line on a run extended by --epochs: what becomes of its learning-rate schedule at the resumed position."""
    at = saved["position"]
    per_epoch = saved.get("steps_per_epoch", 0) * saved.get("global_batch", 0)
    done = at["epoch"] + (at["consumed"] / per_epoch if per_epoch else 0)
    extended = f"trainer: resume extends the run from {before} to {config.epochs} epochs (--epochs {config.epochs}); "
    if config.lr_schedule == "step":
        say(extended + f"the step schedule (x0.1 every {STEP_EPOCHS} epochs) does not depend on the total: it goes "
                       f"on unchanged from epoch {done:g}")
        return
    old = lr_factor(config.lr_schedule, before, config.warmup_epochs)(done, done)
    new = lr_factor(config.lr_schedule, config.epochs, config.warmup_epochs)(done, done)
    lr = config.lr or 1.0  # the checkpoint's lr, resolved when it was written
    say(extended + f"the {config.lr_schedule} schedule is recomputed for {config.epochs} epochs from epoch {done:g}: "
                   f"the lr there goes from {lr * old:.4g} to {lr * new:.4g} (x{new:.3g} of the peak), then decays "
                   f"to 0 at epoch {config.epochs}")


def _global_batch(config, saved, ctx):
    """The config whose per-rank batch keeps the checkpoint's global batch on this run's ranks and --accumulate."""
    total, shares = saved["global_batch"], ctx.world_size * config.accumulate
    if total % shares:
        raise UsageError(f"--resume {config.resume}: its global batch of {total} samples does not split over "
                         f"{ctx.world_size} rank(s) x --accumulate {config.accumulate}; resume on a number of ranks "
                         f"(times --accumulate) that divides {total}")
    batch, before = total // shares, saved["args"]["batch_size"]
    if batch != before:
        ctx.say(f"trainer: resume keeps the global batch of {total}: --batch-size {batch} on {ctx.world_size} "
                f"rank(s) x --accumulate {config.accumulate} (it was {before} per rank)")
    elif config.batch_size not in (batch, default("batch_size")):
        ctx.say(f"trainer: resume keeps the checkpoint's batch_size={batch!r} (not {config.batch_size!r})")
    return dataclasses.replace(config, batch_size=batch)


# Fields renamed since checkpoints were first written: (old name, new name)
RENAMED = {"shuffle": "order", "shuffle_window": "window"}


def adopt(config, settings, say):
    """The config with the checkpoint's value of every field a resume keeps, so a resumed run ends where the first
    would have. A kept value the command line set otherwise is said; a field the checkpoint predates stays as given.

    `settings` is the checkpoint's dict: RunConfig.to_checkpoint(), or vars(args) in checkpoints written before the
    RunConfig (the same names, but for those RENAMED since)."""
    settings = {RENAMED.get(name, name): value for name, value in settings.items()}
    kept = {}
    for name in config.resume_keeps(config.evaluate):
        if name not in settings:
            continue
        given, saved = getattr(config, name), settings[name]
        if given != saved and given != default(name):
            say(f"trainer: resume keeps the checkpoint's {name}={saved!r} (not {given!r})")
        kept[name] = saved
    return dataclasses.replace(config, **kept)


def load_weights(model, saved, config):
    """The weights the run starts from: the checkpoint's, else the start weights', else none (random)."""
    if saved:
        weights.fit(model, saved["model"], f"--resume {config.resume}: its weights", config.model)
    elif config.start_weights:
        weights.load_into(model, config.start_weights, config.model)


def position(saved, start_epoch, steps_per_epoch):
    """Where to start: --start-epoch's beginning, else the checkpoint's position, else the run's beginning."""
    if start_epoch is not None:
        return Position(start_epoch, 0, start_epoch * steps_per_epoch)
    return Position(**saved["position"]) if saved else Position()


def load_training_state(saved, optimizer, scaler):
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])


def rng_states(saved, ctx):
    """This rank's generator states at the saved step, or None: without a checkpoint, or one of another world size
    (whose ranks were other processes)."""
    if saved and len(saved["rng"]) == ctx.world_size:
        return saved["rng"][ctx.rank]
    return None
