"""Which samples each rank reads, batch by batch; the `cpu` backend's order, and DALI's sharding rule.

Rank r's share of an N-sample sequence is [r*N//world, (r+1)*N//world), DALI's shard_id/num_shards rule.
Train: the sequence is one permutation of the split per (seed, epoch); every rank takes whole batches from
its share, floor(N / world) // batch_size of them, so all ranks run the same number of steps and no sample
is read twice. Val: the split in stored order; a rank's last batch may be short, nothing is padded.
"""
import numpy as np


def rank_share(samples, *, rank, world):
    return np.arange(rank * samples // world, (rank + 1) * samples // world)


def train_steps(samples, batch_size, world):
    return samples // world // batch_size


def train_batches(samples, batch_size, *, rank, world, seed, epoch):
    """[steps, batch_size] sample numbers for this rank in this epoch."""
    steps = train_steps(samples, batch_size, world)
    order = np.random.default_rng([seed, epoch]).permutation(samples)
    mine = order[rank_share(samples, rank=rank, world=world)][:steps * batch_size]
    return mine.reshape(steps, batch_size)


def val_batches(samples, batch_size, *, rank, world):
    share = rank_share(samples, rank=rank, world=world)
    return [share[start:start + batch_size] for start in range(0, len(share), batch_size)]


def epoch_batches(samples, options, epoch):
    """This rank's batches (arrays of sample numbers) for `epoch`, at most `options.max_steps` of them."""
    o = options
    if o.train:
        batches = train_batches(samples, o.batch_size, rank=o.rank, world=o.world, seed=o.seed, epoch=epoch)
    else:
        batches = val_batches(samples, o.batch_size, rank=o.rank, world=o.world)
    return batches[:o.max_steps]


def steps_per_epoch(samples, options):
    o = options
    if o.train:
        steps = train_steps(samples, o.batch_size, o.world)
    else:
        steps = -(-len(rank_share(samples, rank=o.rank, world=o.world)) // o.batch_size)
    return steps if o.max_steps is None else min(steps, o.max_steps)


def largest_batch(samples, options):
    """The most samples one of this rank's batches holds: what batch memory needs room for (a batch size larger
    than a rank's share never fills)."""
    o = options
    return min(o.batch_size, -(-samples // o.world))
