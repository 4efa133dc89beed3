"""--resume: the checkpoint chosen and read once (auto: the newest readable one in --output-dir, falling back past a
damaged one), the settings it keeps adopted into the config (the fields RunConfig declares so, and the global
batch), its weights loaded into the model and the training state and position it holds."""
import dataclasses
import os

from trainer import checkpoint
from trainer.args import AUTO, FlagError, default
from trainer.checkpoint import CheckpointError
from trainer.loop import Position


def load(config, ctx):
    """(config, saved): the config with the kept settings of the checkpoint to resume from, and that checkpoint;
    (config, None) when there is none (--resume auto in a fresh --output-dir)."""
    where = config.output_dir if config.resume == AUTO else config.resume
    paths = checkpoint.candidates(where) if os.path.exists(where) else []
    path, saved = checkpoint.newest_readable(paths, ctx.say)
    if saved is None:
        return config, None
    at = saved["position"]
    ctx.say(f"trainer: resuming from {path}: epoch {at['epoch']}, {at['consumed']} of its samples done, global step "
            f"{at['global_step']}")
    config = dataclasses.replace(adopt(config, saved["args"], ctx.say), resume=os.fspath(path))
    return (config if config.evaluate else _global_batch(config, saved, ctx)), saved


def _global_batch(config, saved, ctx):
    """The config whose per-rank batch keeps the checkpoint's global batch on this run's ranks and --accumulate."""
    total, shares = saved["global_batch"], ctx.world_size * config.accumulate
    if total % shares:
        raise FlagError(f"--resume {config.resume}: its global batch of {total} samples does not split over "
                        f"{ctx.world_size} rank(s) x --accumulate {config.accumulate}; resume on a number of ranks "
                        f"(times --accumulate) that divides {total}")
    batch, before = total // shares, saved["args"]["batch_size"]
    if batch != before:
        ctx.say(f"trainer: resume keeps the global batch of {total}: --batch-size {batch} on {ctx.world_size} "
                f"rank(s) x --accumulate {config.accumulate} (it was {before} per rank)")
    elif config.batch_size not in (batch, default("batch_size")):
        ctx.say(f"trainer: resume keeps the checkpoint's batch_size={batch!r} (not {config.batch_size!r})")
    return dataclasses.replace(config, batch_size=batch)


def adopt(config, settings, say):
    """The config with the checkpoint's value of every field a resume keeps, so a resumed run ends where the first
    would have. A kept value the command line set otherwise is said; a field the checkpoint predates stays as given.

    `settings` is the checkpoint's dict: RunConfig.to_checkpoint(), or vars(args) in checkpoints written before the
    RunConfig (the same names)."""
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
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:  # the names and shapes do not match
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"--resume {config.resume}: its weights do not fit {config.model} "
                              f"({first})") from None


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
