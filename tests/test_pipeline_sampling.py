"""Who reads what: the sample order every loader backend follows under DDP."""
import numpy as np
import pytest

from pipeline import sampling


@pytest.mark.parametrize("samples, batch_size, world", [(48, 8, 2), (50, 8, 2), (1000, 7, 3), (14, 3, 4)])
def test_train_epoch_gives_each_rank_equal_steps_and_no_sample_twice(samples, batch_size, world):
    shares = [sampling.train_batches(samples, batch_size, rank=r, world=world, seed=3, epoch=1) for r in range(world)]
    steps = sampling.train_steps(samples, batch_size, world)
    assert all(share.shape == (steps, batch_size) for share in shares)
    seen = np.concatenate([share.ravel() for share in shares])
    assert len(np.unique(seen)) == len(seen) == steps * batch_size * world
    assert seen.min() >= 0 and seen.max() < samples


def test_train_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        return sampling.train_batches(100, 10, rank=0, world=1, seed=seed, epoch=epoch)

    assert np.array_equal(order(0, 1), order(0, 1))
    assert not np.array_equal(order(0, 1), order(0, 2))
    assert not np.array_equal(order(0, 1), order(1, 1))


@pytest.mark.parametrize("samples, batch_size, world", [(19, 4, 2), (5, 4, 3), (100, 10, 4), (3, 8, 2)])
def test_val_reads_every_sample_exactly_once_across_ranks(samples, batch_size, world):
    batches = [b for r in range(world) for b in sampling.val_batches(samples, batch_size, rank=r, world=world)]
    assert sorted(np.concatenate(batches).tolist()) == list(range(samples))
    assert all(0 < len(b) <= batch_size for b in batches)


def test_rank_shares_follow_dali_sharding():
    """DALI's reader gives shard i the samples [i*N//n, (i+1)*N//n)."""
    assert [sampling.rank_share(10, rank=r, world=3).tolist() for r in range(3)] == [[0, 1, 2], [3, 4, 5],
                                                                                       [6, 7, 8, 9]]


def test_a_whole_pass_keeps_the_steps_of_contiguous_rank_shares():
    for samples, batch_size, world in [(48, 8, 2), (50, 8, 2), (1000, 7, 3), (14, 3, 4), (5, 8, 2)]:
        assert sampling.train_steps(samples, batch_size, world) == samples // world // batch_size


def test_ranks_take_their_slice_of_each_global_batch_in_order():
    order = sampling.epoch_order(100, seed=3, epoch=1)
    shares = [sampling.train_batches(100, 4, rank=r, world=3, seed=3, epoch=1, start=10) for r in range(3)]
    interleaved = np.concatenate(shares, axis=1).ravel()  # micro-batch by micro-batch, rank 0's slice first
    assert np.array_equal(interleaved, order[10:10 + 7 * 12])


def consume(samples, batch_size, world, *, start=0, steps=None, accumulate=1):
    """Each rank's batches of a pass from `start`, cut after `steps` of them (an interrupted pass)."""
    return [sampling.train_batches(samples, batch_size, rank=r, world=world, seed=5, epoch=2, start=start,
                                   accumulate=accumulate)[:steps] for r in range(world)]


@pytest.mark.parametrize("samples, before, after, steps_before", [
    (1000, (8, 2), (8, 3), 20),   # world 2 -> 3
    (1000, (5, 4), (5, 2), 13),   # world 4 -> 2
    (1000, (6, 2), (4, 3), 31),   # another per-rank batch, the same global batch
    (97, (4, 2), (3, 3), 5),      # a start that is no step boundary of the resumed pass
])
def test_a_pass_resumed_on_another_world_uses_every_sample_once(samples, before, after, steps_before):
    (batch_before, world_before), (batch_after, world_after) = before, after
    interrupted = consume(samples, batch_before, world_before, steps=steps_before)
    start = steps_before * batch_before * world_before
    resumed = consume(samples, batch_after, world_after, start=start)
    assert len({len(share) for share in resumed}) == 1  # equal steps on every rank
    used = np.concatenate([share.ravel() for share in interrupted + resumed])
    assert len(np.unique(used)) == len(used)
    unused = set(range(samples)) - set(used.tolist())
    assert len(unused) < batch_after * world_after  # only the final remainder, less than one global batch
    assert unused == set(sampling.epoch_order(samples, seed=5, epoch=2)[len(used):].tolist())  # the epoch's tail


@pytest.mark.parametrize("samples, batch_size, world, start", [(1000, 4, 3, 0), (1000, 4, 3, 240), (101, 5, 2, 7)])
def test_accumulating_two_batches_takes_an_optimizer_step_the_samples_of_one_doubled_batch(samples, batch_size,
                                                                                         world, start):
    micro = consume(samples, batch_size, world, start=start, accumulate=2)
    doubled = consume(samples, 2 * batch_size, world, start=start)
    assert all(len(share) == 2 * len(doubled[0]) for share in micro)
    for step in range(len(doubled[0])):
        in_micro = {int(i) for share in micro for i in share[2 * step:2 * step + 2].ravel()}
        assert in_micro == {int(i) for share in doubled for i in share[step]}
