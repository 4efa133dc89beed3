"""`python -m bench feed`: the CPU the training thread spends per sample on the dali-cpu loader (the shared sampler's
order fed through DALI's external source) against the same graph fed by DALI's own webdataset reader, same shards.

    python -m bench feed [--data-path SHARDS] [--batch-size 128] [--sides 224,32] [--workers N] [--steps 16]
                         [--rounds 3]

Each way is built afresh per round (a dali-cpu loader; pipeline.dali.own_reader on that loader's graph and shards);
the batches DALI prepares ahead and the first are dropped, then time.thread_time() runs around --steps batches:
microseconds of the training thread's CPU per sample. Beside it the process's CPU per sample (every thread: DALI's
workers, the feeder thread), so that work moved off the training thread is not taken for work removed. At 224 px on
a CPU both ways spend most of the training thread's time in the iterator's copy of each float32 batch into fresh
torch memory (the same for both); a small side leaves mostly the feed, nearer what a GPU run's thread pays (there
that copy is the device's work). Rounds alternate which way goes first; the medians count, and the ratio is the median
of each round's ratio. Target: the external source at most TARGET x DALI's reader.
"""
import argparse
import statistics
import time

import pipeline
from bench import results
from bench.data import imagenet_sized_shards
from common.cli import Parser, integer, prepped_images
from pipeline.options import default_workers

TARGET = 1.3
OURS, DALIS = "external source", "DALI's reader"
WAYS = (OURS, DALIS)
BACKEND = "dali-cpu"


def main(argv=None):
    args = parse_args(argv or [])
    data = args.data_path or imagenet_sized_shards(args.batch_size * pass_batches(args))
    table = {side: _side(data, side, args) for side in args.sides}
    print(f"\nbench feed: {BACKEND}, batch {args.batch_size}, {args.workers} DALI threads, {args.steps} timed "
          f"batches, {args.rounds} rounds; CPU us per sample (median)")
    for side, row in table.items():
        print(f"{side:>4} px: training thread {row[OURS]['thread_us']:7.1f} ours, {row[DALIS]['thread_us']:7.1f} "
              f"DALI's reader: {row['ratio']:.2f}x (rounds {', '.join(f'{r:.2f}' for r in row['ratios'])}; target "
              f"<= {TARGET:g}x); process {row[OURS]['process_us']:.0f} / {row[DALIS]['process_us']:.0f}")
    path = results.save("feed", {"data_path": str(data), "backend": BACKEND, "batch_size": args.batch_size,
                                 "workers": args.workers, "steps": args.steps, "rounds": args.rounds,
                                 "target": TARGET, "sides": {str(side): row for side, row in table.items()}},
                        out_dir=args.results)
    print(f"saved {path}")
    return 0


def parse_args(argv):
    p = Parser("bench feed", prog="python -m bench feed", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", type=str, help="prep output dir (default: an ImageNet-sized sample under "
                   "build/bench/data)")
    p.add_argument("--batch-size", type=integer(1), default=128)
    p.add_argument("--sides", type=_sides, default=(224, 32), help="output sides to measure at, comma-separated")
    p.add_argument("--workers", type=integer(1), default=default_workers(), help="DALI threads (default: cores)")
    p.add_argument("--steps", type=integer(1), default=16, help="timed batches per pass")
    p.add_argument("--rounds", type=integer(1), default=3, help="alternating rounds; the medians count")
    results.add_option(p)
    args = p.parse_args(argv)
    results.check_option(p, args)
    if BACKEND not in pipeline.available_backends(cuda=False):
        p.error("bench feed needs NVIDIA DALI: pip install 'imagenet-feed[dali]'")
    if args.data_path:
        found = p.prep_output("--data-path", args.data_path)
        if prepped_images(found, "train") < args.batch_size * pass_batches(args):
            p.error(f"--data-path {args.data_path}: a pass reads {args.batch_size * pass_batches(args)} train "
                    "images; give more data, a smaller --batch-size or fewer --steps")
    return args


def _sides(text):
    sides = tuple(integer(1)(part) for part in text.split(",") if part)
    if not sides:
        raise argparse.ArgumentTypeError("no side given")
    return sides


def pass_batches(args):
    """A pass of the external source: the batches dropped (DALI's prefetch queue and the first), then --steps."""
    from pipeline.dali import PREFETCH

    return PREFETCH + 1 + args.steps


def _side(data, side, args):
    """Both ways' median CPU per sample at `side` x `side`, and the median of the rounds' ratios."""
    runs = {way: [] for way in WAYS}
    for number in range(args.rounds):
        for way in WAYS if number % 2 == 0 else WAYS[::-1]:  # a drifting machine favours neither
            runs[way].append(_measure(way, data, side, args))
            print(f"{side} px round {number + 1}/{args.rounds} {way:>15}: {runs[way][-1]['thread_us']:7.1f} us/sample "
                  f"training thread, {runs[way][-1]['process_us']:7.1f} process", flush=True)
    row = {way: {measure: statistics.median(run[measure] for run in runs[way]) for measure in runs[way][0]}
           for way in WAYS}
    row["ratios"] = [ours["thread_us"] / dalis["thread_us"] for ours, dalis in zip(runs[OURS], runs[DALIS])]
    row["ratio"] = statistics.median(row["ratios"])
    return row


def _measure(way, data, side, args):
    """One pass of `way`: the training thread's and the process's CPU per sample over --steps batches."""
    from pipeline.dali import own_reader

    loader = _loader(data, side, args)
    if way == OURS:
        loader.set_epoch(0)
        batches = iter(loader)
    else:
        batches = ((out["images"], out["labels"]) for (out,) in own_reader(loader))
    try:
        return _timed(batches, pass_batches(args) - args.steps, args.steps)
    finally:
        batches.close()  # ends the pass (its feeder thread) before the next way runs


def _timed(batches, dropped, steps):
    for _ in range(dropped):
        next(batches)
    thread, process, samples = time.thread_time(), time.process_time(), 0
    for _ in range(steps):
        _, labels = next(batches)
        samples += len(labels)
    return {"thread_us": (time.thread_time() - thread) / samples * 1e6,
            "process_us": (time.process_time() - process) / samples * 1e6}


def _loader(data, side, args):
    """The one place this bench builds a loader: dali-cpu on the CPU, float32 NCHW, passes of pass_batches."""
    options = pipeline.DataOptions(loader=BACKEND, batch_size=args.batch_size, workers=args.workers, crop_size=side,
                                   val_size=side)
    return pipeline.make_loader(data, "train", options, device="cpu", max_steps=pass_batches(args))
