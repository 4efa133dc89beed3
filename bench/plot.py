"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed).

matplotlib is optional: imported when a plot is drawn, its absence an ImportError saying what to install."""
import pipeline
from common.atomic import atomic_file


def plot_train(result, path, loaders_result=None):
    """Trainer images/s per timing window over the steps, per loader; dashed: the loader-only ceilings."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = {}
    for name, row in result["loaders"].items():
        steps, fps = zip(*(window[:2] for window in row["windows"]))  # [step, fps, resolution]
        line, = ax.plot(steps, fps, marker="o", label=f"trainer + {name} (mean {row['train_fps_mean']:.0f})")
        colors[name] = line.get_color()
    ax.axhline(result["bare_loop"]["images_per_s"], color="black", linewidth=1,
               label=f"bare torch loop ({result['bare_loop']['images_per_s']:.0f})")
    if loaders_result:
        crop = loaders_result.get("crop_size", "?")
        for name, row in loaders_result["loaders"].items():
            if name != pipeline.CEILING:  # results saved before `bench loaders` left synthetic out still hold it
                ax.axhline(row["images_per_s"], linestyle="--", linewidth=1, color=colors.get(name, "grey"),
                           label=f"{name} loader alone, {crop} px ({row['images_per_s']:.0f})")
    ax.set_xlabel("training step (end of timing window)")
    ax.set_ylabel("images/s (all ranks)")
    ax.set_yscale("log" if _spread(ax) > 20 else "linear")
    ax.set_title(f"{result['model']} at {result['crop_size']} px, batch {result['batch_size']}, amp {result['amp']}, "
                 f"{result['device']}")
    ax.legend(fontsize=8, loc="best")
    return _save(plt, fig, ax, path)


def plot_recipes(result, path):
    """Top-1 after each epoch over the seconds since training started, per run of `bench recipes`; dashed: the EMA
    run's averaged weights beside its raw ones."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, run in result["runs"].items():
        sizes = " → ".join(str(size) for size in dict.fromkeys(run["resolutions"]))  # the ramp's steps, in order
        line, = ax.plot(*_accuracy_curve(run["val"]), marker="o",
                        label=f"{name}, {sizes} px ({run['training_time']:.0f} s)")
        if run["val_ema"]:
            ax.plot(*_accuracy_curve(run["val_ema"]), marker="s", linestyle="--", color=line.get_color(),
                    label=f"{name}, EMA weights")
    ax.set_xlabel("seconds since training started (a point: an epoch's validation)")
    ax.set_ylabel(f"top-1 % at {result['val_crop_size']} px")
    ax.set_title(f"{result['model']}, {result['epochs']} epochs, batch {result['batch_size']}, seed {result['seed']}, "
                 f"{result['loader']} loader, {result['device']}")
    ax.legend(fontsize=8, loc="lower right")
    return _save(plt, fig, ax, path)


def _accuracy_curve(validations):
    """(seconds, top-1) of a run's validations, for ax.plot."""
    return [v["seconds"] for v in validations], [v["acc1"] for v in validations]


def _save(plt, fig, ax, path):
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'imagenet-feed[plots]'", name="matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spread(ax):
    """Largest over smallest positive value drawn, to pick a log axis when ceilings dwarf the curves."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
    return max(values) / min(values) if values else 1
