"""`python -m bench feed`: the training thread's CPU per sample on the dali-cpu loader against the same graph fed by
DALI's own webdataset reader, both measured, with their ratio, printed and saved; and pipeline.dali.own_reader hands
out that graph's batches from the loader's shards."""
import json

import pytest
import torch

import pipeline

pytestmark = pytest.mark.skipif("dali-cpu" not in pipeline.available_backends(cuda=False),
                                reason="needs NVIDIA DALI")


def test_the_feed_bench_measures_both_ways_and_their_ratio(sample_shards, tmp_path, capsys):
    from bench import feed

    argv = ["--data-path", str(sample_shards), "--batch-size", "8", "--sides", "32", "--steps", "2", "--rounds", "1",
            "--workers", "1", "--results", str(tmp_path)]
    assert feed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "32 px: training thread" in printed and "DALI's reader" in printed
    saved = json.loads(next(tmp_path.glob("feed-*.json")).read_text())
    row = saved["sides"]["32"]
    assert row["ratio"] > 0 and len(row["ratios"]) == 1
    assert all(row[way]["thread_us"] > 0 and row[way]["process_us"] > 0 for way in feed.WAYS)


def test_own_reader_runs_the_loaders_graph_on_its_shards(sample_shards):
    from pipeline.dali import LABEL_BYTES, own_reader

    options = pipeline.DataOptions(loader="dali-cpu", batch_size=4, workers=1, crop_size=24, val_size=24)
    loader = pipeline.make_loader(sample_shards, "train", options, device="cpu")
    batches = own_reader(loader)
    for _ in range(3):
        (out,) = next(batches)
        assert out["images"].shape == (4, 3, 24, 24) and out["images"].dtype == torch.float32
        assert out["labels"].shape == (4, LABEL_BYTES)
