"""What `bench loaders` reports of its rounds on local data: the medians per loader, the lines it prints per round,
and its tables."""
import statistics

import PIL

from bench.loader_timing import MEASURES, RESUME_AT, RESUME_MEASURES
from bench.torchvision_baseline import BASELINE


def summarise(runs):
    """{loader: [{measure: value} per round]} -> {loader: the median of each measure, the throughput's ratio to
    the baseline's, a pipeline backend's resume ratio (set-up from RESUME_AT / from 0), and the rounds}."""
    medians = {name: {measure: statistics.median(run[measure] for run in rounds)
                      for measure in (*MEASURES, *RESUME_MEASURES) if measure in rounds[0]}
               for name, rounds in runs.items()}
    base = medians[BASELINE]["images_per_s"]
    return {name: {**row, "ratio_to_baseline": row["images_per_s"] / base, **resume_ratio(row), "rounds": runs[name]}
            for name, row in medians.items()}


def resume_ratio(row):
    if "setup_from_0_s" not in row:
        return {}
    return {"resume_setup_ratio": row["setup_from_90pct_s"] / row["setup_from_0_s"]}


def format_run(run):
    resumed = (f", resumed pass set-up {run['setup_from_0_s']:.2f} s from 0, {run['setup_from_90pct_s']:.2f} s from "
               f"{RESUME_AT:.0%}") if "setup_from_0_s" in run else ""
    return (f"{run['images_per_s']:8.0f} img/s, set-up {run['first_pass_setup_s']:.2f} s first pass, "
            f"{run['later_pass_setup_s']:.2f} s later pass{resumed}")


def print_table(table, decode, args, images):
    print(f"\nloader-only train throughput at 224, batch {args.batch_size}, {args.workers} workers, "
          f"{args.steps} timed batches x {args.rounds} rounds (median), {images} train images; "
          f"baseline on PIL {PIL.__version__}")
    print("set-up: set_epoch + iter to the first batch, in the first pass of a fresh loader (building it "
          "included) and in a later pass")
    print(f"{'loader':>14} {'img/s':>9} {'x baseline':>11} {'set-up: first pass':>19} {'later pass':>11}")
    for name, row in table.items():
        print(f"{name:>14} {row['images_per_s']:9.0f} {row['ratio_to_baseline']:10.2f}x "
              f"{row['first_pass_setup_s']:17.2f} s {row['later_pass_setup_s']:9.2f} s")
    print("\nsingle-core decode")
    for name, rate in decode.items():
        print(f"{name:>34} {rate:7.0f} img/s")


def print_resume_table(table, images, start):
    print(f"\nresumed pass set-up: set_epoch(0, start) + iter to the first batch on a fresh loader (its build not "
          f"counted), from the epoch's start and from sample {start} of {images} ({start / images:.0%})")
    print(f"{'loader':>14} {'from 0':>9} {'from ' + format(start / images, '.0%'):>11} {'ratio':>7}")
    for name, row in table.items():
        if "resume_setup_ratio" in row:
            print(f"{name:>14} {row['setup_from_0_s']:7.2f} s {row['setup_from_90pct_s']:9.2f} s "
                  f"{row['resume_setup_ratio']:6.2f}x")
