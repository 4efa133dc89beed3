"""Which samples each rank reads, batch by batch: the order every backend follows.

Train: the order of an epoch is one permutation of the split per (seed, epoch), whatever the world size. A pass
consumes it in global steps of G = batch_size * world * accumulate samples from `start`, the samples of the epoch
already consumed over all ranks: global step k covers order[start + k*G : start + (k+1)*G]. Inside a global step
the `accumulate` micro-batches come in order, each the next batch_size * world samples, of which rank r takes slice
r. Every rank runs floor((N - start) / G) * accumulate batches and the remainder (fewer than G samples) is dropped.
So a pass resumed from a checkpoint's sample count, on another world size or per-rank batch, continues the same
sequence: across the interruption every sample is used once, apart from the dropped remainder.

The permutation is global (any sample may follow any other) or, for data read through a bounded cache, shard-window
(ShardWindows): the shards permuted, the permuted list cut into windows of W shards, the samples permuted within
each window, the windows concatenated. Either is a function of (seed, epoch) and the data alone, and either is
consumed as above, so the contract holds for both; a window only bounds how many shards one stretch of the epoch
reads.

Val: the split in stored order, rank r reading [r*N//world, (r+1)*N//world) (DALI's shard_id/num_shards rule); a
rank's last batch may be short, nothing is padded; `start` and `accumulate` do not apply.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardWindows:
    """The shard-window order of a split: its samples per shard, in stored order (sample numbers run through the
    shards in turn), and the shards per window."""
    shard_samples: tuple
    window: int

    def permutation(self, rng):
        first = np.concatenate([[0], np.cumsum(self.shard_samples, dtype=np.int64)])
        shards = rng.permutation(len(self.shard_samples))
        windows = [np.concatenate([np.arange(first[s], first[s + 1]) for s in shards[at:at + self.window]])
                   for at in range(0, len(shards), self.window)]
        return np.concatenate([rng.permutation(members) for members in windows])


def epoch_order(samples, *, seed, epoch, shard_order=None):
    """The permutation of `epoch`: global, or shard-window when `shard_order` (a ShardWindows) is given."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(samples) if shard_order is None else shard_order.permutation(rng)


def rank_share(samples, *, rank, world):
    return np.arange(rank * samples // world, (rank + 1) * samples // world)


def train_steps(samples, batch_size, world, *, accumulate=1, start=0):
    """The batches every rank runs in a train pass from `start`: whole global steps only."""
    return (samples - start) // (batch_size * world * accumulate) * accumulate


def train_batches(samples, batch_size, *, rank, world, seed, epoch, accumulate=1, start=0, shard_order=None):
    """[steps, batch_size] sample numbers for this rank in the train pass of `epoch` from `start`."""
    return micro_batches(samples, batch_size, world=world, seed=seed, epoch=epoch, accumulate=accumulate,
                         start=start, shard_order=shard_order)[:, rank]


def micro_batches(samples, batch_size, *, world, seed, epoch, accumulate=1, start=0, shard_order=None):
    """[steps, world, batch_size]: every rank's sample numbers in the train pass of `epoch` from `start`."""
    steps = train_steps(samples, batch_size, world, accumulate=accumulate, start=start)
    order = epoch_order(samples, seed=seed, epoch=epoch, shard_order=shard_order)
    consumed = order[start:start + steps * batch_size * world]
    return consumed.reshape(steps, world, batch_size)


def val_batches(samples, batch_size, *, rank, world):
    share = rank_share(samples, rank=rank, world=world)
    return [share[start:start + batch_size] for start in range(0, len(share), batch_size)]


def first_micro_batch(start, options):
    """The number in the epoch of a pass's first micro-batch, counted over all ranks (whole micro-batches before
    `start`)."""
    return start // (options.batch_size * options.world)


def check_start(samples, options, start):
    """ValueError unless `start` is a position a pass of `options` can start from."""
    if not options.train and start:
        raise ValueError(f"pipeline: start={start} applies to train passes only; validation reads every image")
    if not 0 <= start <= samples:
        raise ValueError(f"pipeline: start={start} lies outside the epoch's {samples} samples")


def pass_batches(samples, options, epoch, start=0):
    """This rank's batches (arrays of sample numbers) of the pass of `epoch` from `start`, at most
    `options.max_steps` of them."""
    return ranks_batches(samples, options, epoch, start, ranks=(options.rank,))[0]


def ranks_batches(samples, options, epoch, start=0, *, ranks):
    """pass_batches of each of `ranks` (the order drawn once)."""
    o = options
    if o.train:
        every_rank = micro_batches(samples, o.batch_size, world=o.world, seed=o.seed, epoch=epoch,
                                   accumulate=o.accumulate, start=start, shard_order=o.shard_order)[:o.max_steps]
        return [every_rank[:, rank] for rank in ranks]
    return [val_batches(samples, o.batch_size, rank=rank, world=o.world)[:o.max_steps] for rank in ranks]


def pass_steps(samples, options, start=0):
    """len(pass_batches(samples, options, any epoch, start)), without drawing the order."""
    o = options
    if o.train:
        steps = train_steps(samples, o.batch_size, o.world, accumulate=o.accumulate, start=start)
    else:
        steps = -(-len(rank_share(samples, rank=o.rank, world=o.world)) // o.batch_size)
    return steps if o.max_steps is None else min(steps, o.max_steps)


def largest_batch(samples, options):
    """The most samples one of this rank's batches holds: what batch memory needs room for (a batch size larger
    than a rank's share never fills)."""
    o = options
    return min(o.batch_size, -(-samples // o.world))
