"""Time-to-accuracy recipes in the trainer: named recipes set flags the command line still overrides, progressive
resizing trains each epoch at its scheduled resolution and records it, validation has its own resolution, and a run
stopped in the middle of a ramp, with EMA and mixup on, resumes to the weights and average of an unbroken run."""
import json
import re
import types

import pytest
import torch

from trainer.args import build_parser, parse_args
from trainer.fit import main
from trainer.recipes import BY_NAME, RECIPES
from trainer.resolution import train_resolution

# 10 steps an epoch of the sample (batch 24), 3 epochs: 16 px, then 24, then 32 on the ramp
RAMP = ["--min-res", "16", "--crop-size", "32", "--start-ramp", "0", "--end-ramp", "2", "--res-multiple", "8"]
RUN = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--val-size", "44", "--val-crop-size", "40",
       "--workers", "1", "--batch-size", "24", "--epochs", "3", "--training_step_per_epoch", "10",
       "--eval_step_per_epoch", "2", "--print-freq", "5", "--skip_steps", "1", "--seed", "5", *RAMP,
       "--ema", "0.9", "--ema-every", "2", "--mixup", "0.2", "--cutmix", "1.0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ramp(**given):
    fields = dict(min_res=160, crop_size=192, start_ramp=65, end_ramp=76, res_multiple=32) | given
    return types.SimpleNamespace(**fields)


def test_the_resolution_holds_then_grows_linearly_in_multiples_then_holds():
    ffcv = ramp()  # FFCV's rn50 88-epoch ramp
    assert [train_resolution(ffcv, epoch) for epoch in (0, 65, 66, 70, 71, 75, 76, 87)] == \
        [160, 160, 160, 160, 192, 192, 192, 192]  # 71: 160 + 32 x 6/11 = 177.5, nearer 192
    assert [train_resolution(ramp(min_res=128, crop_size=224, start_ramp=2, end_ramp=5), e) for e in range(7)] == \
        [128, 128, 128, 160, 192, 224, 224]
    off = ramp(min_res=None)
    assert {train_resolution(off, epoch) for epoch in range(90)} == {192}


def test_rounding_never_leaves_the_ramp():
    odd = ramp(min_res=20, crop_size=36, start_ramp=0, end_ramp=4, res_multiple=16)
    sizes = [train_resolution(odd, epoch) for epoch in range(6)]
    assert sizes == sorted(sizes) and min(sizes) == 20 and max(sizes) == 36


def test_recipe_list_prints_each_recipe_with_its_source_and_result(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--recipe", "list"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for recipe in RECIPES:
        assert recipe.name in printed and recipe.result in printed and recipe.source in printed
    assert "75.86" in printed and "73.39" in printed and "72.95" in printed and "77.1" in printed
    assert "75.6 % in 21.7 min" in printed


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_recipe_sets_real_flags_and_parses(name, tmp_path):
    dests = {action.dest for action in build_parser()._actions}
    assert set(BY_NAME[name].flags) <= dests
    config = parse_args(["--recipe", name, "--device", "cpu", "--loader", "synthetic", "--output-dir", str(tmp_path)])
    assert config.recipe == name
    for dest, value in BY_NAME[name].flags.items():
        assert getattr(config, dest) == value, dest


def test_a_recipe_flag_given_on_the_command_line_wins(tmp_path):
    config = parse_args(["--recipe", "ffcv-rn50-24", "--epochs", "3", "--min-res", "128", "--device", "cpu",
                         "--loader", "synthetic", "--output-dir", str(tmp_path)])
    assert (config.epochs, config.min_res) == (3, 128)
    assert (config.crop_size, config.val_crop_size, config.label_smoothing, config.start_ramp) == (192, 256, 0.1, 17)


@pytest.mark.parametrize("flags, message", [
    (["--recipe", "ffcv-rn99"], "unknown --recipe 'ffcv-rn99'; `--recipe list` shows them"),
    (["--min-res", "16"], "--min-res 16 needs --start-ramp and --end-ramp"),
    (["--start-ramp", "3", "--end-ramp", "5"], "add --min-res"),
    (["--min-res", "64", "--crop-size", "32", "--start-ramp", "0", "--end-ramp", "1"], "--min-res 64 is above"),
    (["--min-res", "16", "--start-ramp", "4", "--end-ramp", "2"], "expected 0 <= start <= end"),
    (["--crop-scale", "0.5", "1.5"], "--crop-scale must be a (min, max) pair with 0 < min <= max <= 1, got [0.5, 1.5]"),
    (["--crop-ratio", "2", "1"], "--crop-ratio must be a (min, max) pair with 0 < min <= max, got [2.0, 1.0]"),
    (["--val-crop-size", "300", "--val-size", "256"], "--val-size 256 is below the validation crop 300"),
    (["--res-multiple", "0"], "--res-multiple/--res_multiple: must be at least 1, not 0"),
])
def test_a_bad_recipe_flag_is_one_line_naming_it(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args([*flags, "--device", "cpu", "--loader", "synthetic", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def saved(out):
    return torch.load(out / "checkpoint.pth", weights_only=True)


def trained_resolutions(out):
    """{epoch: the resolutions its timed windows record}, from log.jsonl."""
    by_epoch = {}
    for line in (out / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["phase"] == "train" and "resolution" in record:
            by_epoch.setdefault(record["epoch"], set()).add(record["resolution"])
    return by_epoch


@pytest.fixture(scope="module")
def unbroken(sample_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    report = main([*RUN, "--data-path", str(sample_shards), "--output-dir", str(out)])
    return out, report


def test_each_epoch_trains_at_its_resolution_and_validates_at_its_own(unbroken):
    out, report = unbroken
    assert trained_resolutions(out) == {0: {16}, 1: {24}, 2: {32}}
    assert {window[2] for window in report["train_fps_windows"]} == {16, 24, 32}
    assert report["progressive"] == dict(min_res=16, max_res=32, start_ramp=0, end_ramp=2, res_multiple=8)
    assert (report["crop_size"], report["val_crop_size"]) == (32, 40)
    phases = [json.loads(line)["phase"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert phases.count("val") == phases.count("val_ema") == 3
    assert report["best_weights"] in ("raw", "ema")


def test_the_console_says_the_resolution_of_each_window(sample_shards, tmp_path, capsys):
    main([*RUN, "--epochs", "2", "--data-path", str(sample_shards), "--output-dir", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if "img/s" in line and "skipped" not in line]
    assert {re.search(r" at (\d+ px)", line)[1] for line in lines} == {"16 px", "24 px"}


def test_a_run_stopped_mid_ramp_resumes_to_the_unbroken_weights_and_average(unbroken, sample_shards, tmp_path):
    expected = saved(unbroken[0])
    out = tmp_path / "stopped"
    command = [*RUN, "--data-path", str(sample_shards), "--output-dir", str(out)]
    main([*command, "--stop-step-num", "15"])  # epoch 1, at 24 px, half done
    stopped = saved(out)
    assert stopped["position"] == {"epoch": 1, "consumed": 120, "global_step": 15}
    main(command)
    final = saved(out)
    for part in ("model", "ema"):
        assert final[part].keys() == expected[part].keys()
        assert all(torch.equal(final[part][name], expected[part][name]) for name in expected[part]), part
    assert not all(torch.equal(final["ema"][name], final["model"][name]) for name in final["model"])
    assert trained_resolutions(out)[1] == {24}
