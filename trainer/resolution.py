"""Progressive resizing: the training resolution of each epoch. FFCV's schedule: low resolution up to the start of
the ramp, then linear growth to the full crop at its end, each step rounded to a multiple that keeps the convolutions
on fast kernels. Cheap early epochs learn coarse features nearly as well, so the run reaches an accuracy sooner.

A function of the epoch alone, so a resumed run trains each epoch at the resolution an unbroken one would."""


def train_resolution(config, epoch):
    """The crop side of `epoch`'s training batches: config.crop_size without progressive resizing (no min_res)."""
    low, high = config.min_res, config.crop_size
    if low is None or epoch >= config.end_ramp:
        return high
    if epoch <= config.start_ramp:
        return low
    grown = low + (high - low) * (epoch - config.start_ramp) / (config.end_ramp - config.start_ramp)
    rounded = round(grown / config.res_multiple) * config.res_multiple
    return min(high, max(low, rounded))
