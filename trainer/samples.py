"""--log-samples: the sample numbers each rank trains on, step by step, in <output-dir>/samples-rank<R>.jsonl.

They come from the order every loader follows (pipeline.sampling), for the epoch and position each pass starts
at, so a run interrupted and resumed, on the same or another number of ranks, shows which samples it used."""
import json
from pathlib import Path

from pipeline import sampling


class SampleLog:
    def __init__(self, config, ctx, loader):
        """`loader`: the train loader, whose order (global or shard-window) the log follows."""
        self.config, self.ctx, self.samples, self.shard_order = config, ctx, loader.samples, loader.shard_order
        self.file = open(Path(config.output_dir) / f"samples-rank{ctx.rank}.jsonl", "a")  # noqa: SIM115 (closed by close())
        self._pass = None  # (epoch, start, this rank's micro-batches from start)

    def step(self, t):
        """Append the samples of the optimizer step t just took."""
        epoch, consumed = t.position.epoch, t.position.consumed
        start = consumed - t.global_batch
        if self._pass is None or self._pass[0] != epoch or start < self._pass[1]:
            self._pass = (epoch, start, self._micro_batches(epoch, start))
        first = (start - self._pass[1]) // t.global_batch * t.accumulate
        ids = self._pass[2][first:first + t.accumulate].ravel().tolist()
        self.file.write(json.dumps({"epoch": epoch, "global_step": t.position.global_step, "samples": ids}) + "\n")
        self.file.flush()

    def _micro_batches(self, epoch, start):
        c = self.config
        return sampling.train_batches(self.samples, c.batch_size, rank=self.ctx.rank, world=self.ctx.world_size,
                                      seed=c.seed, epoch=epoch, start=start, accumulate=c.accumulate,
                                      shard_order=self.shard_order)

    def close(self):
        self.file.close()
