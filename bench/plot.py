"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed).

matplotlib is optional: imported when a plot is drawn, its absence an ImportError saying what to install."""
from common.atomic import atomic_file


def plot_train(result, path, loaders_result=None):
    """Trainer images/s per timing window over the steps, per loader; dashed: the loader-only ceilings."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = {}
    for name, row in result["loaders"].items():
        steps, fps = zip(*row["windows"])
        line, = ax.plot(steps, fps, marker="o", label=f"trainer + {name} (mean {row['train_fps_mean']:.0f})")
        colors[name] = line.get_color()
    ax.axhline(result["bare_loop"]["images_per_s"], color="black", linewidth=1,
               label=f"bare torch loop ({result['bare_loop']['images_per_s']:.0f})")
    if loaders_result:
        crop = loaders_result.get("crop_size", "?")
        for name, row in loaders_result["loaders"].items():
            if name != "synthetic":  # results saved before `bench loaders` left synthetic out still hold it
                ax.axhline(row["images_per_s"], linestyle="--", linewidth=1, color=colors.get(name, "grey"),
                           label=f"{name} loader alone, {crop} px ({row['images_per_s']:.0f})")
    ax.set_xlabel("training step (end of timing window)")
    ax.set_ylabel("images/s (all ranks)")
    ax.set_yscale("log" if _spread(ax) > 20 else "linear")
    ax.set_title(f"{result['model']} at {result['crop_size']} px, batch {result['batch_size']}, amp {result['amp']}, "
                 f"{result['device']}")
    ax.legend(fontsize=8, loc="best")
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
