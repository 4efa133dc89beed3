"""`bench loaders` on local data: rounds of every loader (the torchvision baseline and each pipeline backend) built
afresh and timed through its interface, alternating; the medians printed and saved."""
import tempfile
from pathlib import Path

import PIL
import torch

import pipeline
from bench import results
from bench.data import imagenet_sized_shards
from bench.decode_rates import decode_rates
from bench.loader_table import format_run, print_resume_table, print_table, summarise
from bench.loader_timing import RESUME_AT, RESUME_MEASURES, time_loader, time_resumed_pass
from bench.torchvision_baseline import BASELINE, PREFETCH, baseline_loader, folder_layout
from pipeline import dataset

RESUME_BATCHES = 1  # both resumed passes stop after their first batch: they differ in their start alone


def run(args):
    data_path = args.data_path or imagenet_sized_shards(args.batch_size * pass_batches(args))
    images = dataset.open_dataset(data_path).split("train").samples
    start = resume_start(images, args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        folders = folder_layout(data_path, Path(scratch))
        runs = {name: [] for name in [BASELINE, *args.backends]}
        for round_number in range(args.rounds):
            for name in runs:
                runs[name].append(time_round(name, data_path, folders, args, start, round_number))
                print(f"round {round_number + 1}/{args.rounds} {name:>12}: {format_run(runs[name][-1])}", flush=True)
    decode = decode_rates(data_path)
    table = summarise(runs)
    print_table(table, decode, args, images)
    print_resume_table(table, images, start)
    path = results.save("loaders", out_dir=args.results, payload={
        "data_path": str(data_path), "train_images": images, "batch_size": args.batch_size,
        "workers": args.workers, "steps": args.steps, "rounds": args.rounds, "crop_size": 224, "resume_start": start,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "baseline_pil": PIL.__version__, "loaders": table, "decode_per_core": decode})
    print(f"saved {path}")
    return 0


def time_round(name, data_path, folders, args, start, round_number):
    """One round's measures of loader `name`: MEASURES, and for a pipeline backend RESUME_MEASURES (which of the two
    resumed passes goes first alternates with the rounds)."""
    warmup = warmup_batches(name, args.workers)
    run = time_loader(loader_maker(name, data_path, folders, args, batches=warmup + args.steps), warmup, args.steps)
    if name != BASELINE:
        make = loader_maker(name, data_path, folders, args, batches=RESUME_BATCHES)
        starts = dict(zip(RESUME_MEASURES, (0, start)))
        order = reversed(RESUME_MEASURES) if round_number % 2 else RESUME_MEASURES  # a drifting VM favours neither
        run.update({measure: time_resumed_pass(make, starts[measure]) for measure in order})
    return run


def resume_start(images, batch_size):
    """The sample RESUME_AT of the epoch in, or nearer its start where that would leave no whole batch."""
    return min(int(RESUME_AT * images), images - batch_size)


def loader_maker(name, data_path, folders, args, batches):
    """A function that builds loader `name` (or the baseline) with passes of `batches` batches."""
    if name == BASELINE:
        return lambda: baseline_loader(folders, args, batches)
    options = pipeline.DataOptions(loader=name, batch_size=args.batch_size, workers=args.workers)
    return lambda: pipeline.make_loader(data_path, "train", options, max_steps=batches)


def warmup_batches(name, workers):
    """The batches dropped before timing: those the loader may have prepared before the first was asked for (its
    own count; the baseline's DataLoader prefetches PREFETCH per worker), and the first."""
    ahead = PREFETCH * workers if name == BASELINE else pipeline.batches_ahead(name, workers=workers)
    return ahead + 1


def pass_batches(args):
    """The longest pass of this run's loaders: its warm-up, then the timed --steps."""
    return max(warmup_batches(name, args.workers) for name in (BASELINE, *args.backends)) + args.steps
