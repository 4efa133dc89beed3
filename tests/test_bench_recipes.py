"""bench recipes runs the trainer three times on the same data, epochs and seed: every epoch at the full crop, on the
progressive-resizing ramp, and on the ramp with an EMA of the weights; it records what each epoch trained at and
each validation over time, and refuses a bad flag in one line before any run."""
import importlib.util
import json
import types

import pytest

from bench import recipes
from prep import imagenet, sample
from trainer.resolution import train_resolution

RAMP = dict(min_res=16, crop_size=32, start_ramp=0, end_ramp=2, res_multiple=8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 classes of 8 train and 2 validation images: 3 steps of batch 8 an epoch."""
    root = tmp_path_factory.mktemp("recipes")
    sample.write_sample(root / "src", classes=3, train_per_class=8, val_per_class=2, quirks=False)
    assert imagenet.main(["--src", str(root / "src"), "--out", str(root / "shards"), "--workers", "1"]) == 0
    return root / "shards"


def test_three_runs_same_epochs_and_seed_each_epoch_at_its_resolution(shards, tmp_path, capsys,
                                                                      one_torch_thread):
    ramp_flags = [f"--{name.replace('_', '-')} {value}" for name, value in RAMP.items()]
    argv = (f"--data-path {shards} --device cpu --epochs 3 --batch-size 8 --seed 7 --val-crop-size 40 --ema 0.9 "
            f"--results {tmp_path / 'results'}")
    assert recipes.main(" ".join([argv, *ramp_flags]).split()) == 0

    saved = json.loads(next((tmp_path / "results").glob("recipes-*.json")).read_text())
    runs = saved["runs"]
    assert list(runs) == ["fixed", "progressive", "progressive+ema"]
    assert {(run["epochs"], run["seed"]) for run in runs.values()} == {(3, 7)}
    ramp = [train_resolution(types.SimpleNamespace(**RAMP), epoch) for epoch in range(3)]
    assert ramp == [16, 24, 32]
    assert [run["resolutions"] for run in runs.values()] == [[32, 32, 32], ramp, ramp]
    for run in runs.values():
        assert [v["epoch"] for v in run["val"]] == [0, 1, 2] and run["val_images"] == 6
        assert run["time_ratio"] == pytest.approx(run["training_time"] / runs["fixed"]["training_time"], abs=1e-3)
    assert [v["epoch"] for v in runs["progressive+ema"]["val_ema"]] == [0, 1, 2]
    assert all(v["acc1"] is not None for v in runs["progressive+ema"]["val_ema"])
    assert runs["fixed"]["val_ema"] == runs["progressive"]["val_ema"] == []
    # the same seed, and an average that only reads the weights: the raw weights of the two ramps validate alike
    assert [v["acc1"] for v in runs["progressive"]["val"]] == [v["acc1"] for v in runs["progressive+ema"]["val"]]

    printed = capsys.readouterr().out
    assert "fixed" in printed and "16,24,32" in printed and "32,32,32" in printed
    if importlib.util.find_spec("matplotlib"):  # optional: the plots extra
        png = next((tmp_path / "results").glob("recipes-*.png"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, named", [
    ("--min-res 48", "--min-res 48"),
    ("--start-ramp 3 --end-ramp 1", "--start-ramp 3"),
    ("--ema 1", "--ema"),
    ("--epochs 0", "--epochs"),
    ("--loader synthetic", "--loader"),
    ("--model nosuch", "--model nosuch"),
    ("--model inception_v3", "--crop-size 32"),
    ("--batch-size 4000", "--batch-size 4000"),
    ("--data-path {missing}", "--data-path {missing}"),
    ("--data-path {shards} --batch-size 9", "--batch-size 9"),
])
def test_a_bad_flag_is_one_line_exit_status_2_before_any_run(argv, named, shards, tmp_path, capsys):
    places = {"missing": tmp_path / "missing", "shards": shards}
    with pytest.raises(SystemExit) as stop:
        recipes.main(argv.format(**places).split())
    out, err = capsys.readouterr()
    assert (stop.value.code, out, len(err.splitlines())) == (2, "", 1), err
    assert err.startswith("bench recipes: ") and named.format(**places) in err
