"""--resume: the checkpoint read once, the settings it keeps adopted into the config (the fields RunConfig declares
so), its weights loaded into the model and the training state it holds."""
import dataclasses

from trainer import checkpoint
from trainer.args import FlagError, default
from trainer.checkpoint import CheckpointError


def load(config, ctx):
    """(config, saved): the config with the kept settings of the --resume checkpoint, and that checkpoint (None
    without --resume)."""
    if not config.resume:
        return config, None
    try:
        saved = checkpoint.load(config.resume)
        settings = saved["args"]
    except Exception as error:  # any unreadable file is the same damaged input
        raise CheckpointError(f"--resume {config.resume}: not a trainer checkpoint "
                              f"({type(error).__name__})") from None
    return adopt(config, settings, ctx.say), saved


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


def position(saved, start_epoch):
    """(epoch, step) to start from: --start-epoch's start, else the checkpoint's, else the beginning."""
    if start_epoch is not None:
        return start_epoch, 0
    return (saved["epoch"], saved["step"]) if saved else (0, 0)


def load_training_state(saved, steps_per_epoch, optimizer, scaler):
    if saved["steps_per_epoch"] != steps_per_epoch:
        raise FlagError(f"--resume: the checkpoint has {saved['steps_per_epoch']} steps per epoch, this "
                        f"run {steps_per_epoch}; resume with the same world size, batch size and data")
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])


def rng_states(saved, ctx):
    """This rank's generator states at the saved step, or None: without a checkpoint, or one of another world size
    (whose ranks drew other samples)."""
    if saved and len(saved["rng"]) == ctx.world_size:
        return saved["rng"][ctx.rank]
    return None
