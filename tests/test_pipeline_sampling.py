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
