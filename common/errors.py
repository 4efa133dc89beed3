"""What the code raises about its input. Each message names the flag, file or path; a command-line entry point
prints it as one line and exits with the error's status: 2 for a flag that cannot be and for data that is not where
it was said to be, 1 for data that is there but damaged (check it with `python -m prep.verify DIR`)."""


class UsageError(ValueError):
    """A flag (or an option given to a library call) that cannot be, whether the command line, the data or the
    machine shows it: the message names it."""
    exit_status = 2


class DataError(Exception):
    exit_status = 1


class MissingData(DataError):
    """A data path that is not a dataset: no directory, no manifest or file lists, no such split."""
    exit_status = 2


class BadManifest(DataError):
    """manifest.json, a file list or a DALI index that cannot be read as one, or that disagrees with itself."""


class DamagedShard(DataError):
    """A shard missing, shorter or longer than its manifest entry, or whose index disagrees with it."""


class CorruptSample(DataError):
    """A sample that does not decode or has no class label, where it cannot be skipped."""


class DecodeError(CorruptSample):
    """DALI failed on a sample that the CPU decoder cannot decode either (DALI cannot skip samples)."""


class DataTimeout(DataError):
    """A wait for data (a shard, room in the cache, a loader worker, another rank) that passed its deadline; the
    message names the rank, what it waited for and the cache's bytes held against its limit."""


class NoRoom(DataError):
    """Memory or disk too small for what a loader was asked to hold: shared memory (/dev/shm, a container's tmpfs)
    for its batch memory, a cache limit for the shards in flight or the disk for that limit. The message says what
    is needed, what there is, and what would fit (a larger --shm-size, fewer workers, a smaller batch, the least
    cache limit)."""
    exit_status = 2


class MissingSample(DataError):
    """A file that a file list (train_list.txt, val_list.txt) names but that is not there or cannot be read: the
    folder layout changed after prep. Damaged data (exit status 1): the dataset is where it was said to be."""
