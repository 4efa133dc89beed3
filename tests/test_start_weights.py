"""Weights a run starts from that are no trainer checkpoint: --pretrained reads torchvision's default weights from the
local torch cache only (absent: one line saying how to get them, exit 2), and --resume takes a file of plain weights
(a state_dict, or pytorch/examples' {"state_dict": ...} with DataParallel's "module." prefix). --evaluate evaluates
them; training starts from them at epoch 0; the same command started again resumes the run's own checkpoint.

The weights are made to be told apart from any other: a zero classifier whose bias picks one class, so the accuracy
an evaluation reports is that class's share of the validation set, exactly."""
import json
import os

import pytest
import torch
import torchvision

from common.layout import MANIFEST
from trainer.fit import main as train

MODEL, PICKED = "resnet18", 3
TINY = ["--device", "cpu", "--loader", "cpu", "--model", MODEL, "--num_classes", "1000", "--crop-size", "32",
        "--val-size", "36", "--workers", "1", "--batch-size", "8", "--print-freq", "1", "--skip_steps", "0",
        "--eval_step_per_epoch", "-1"]


def picking(label):
    """A state_dict of MODEL that predicts `label` for every image."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(MODEL, num_classes=1000)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[label] = 10.0
    return model.state_dict()


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path: the hub cache's file for MODEL's default weights, as torchvision would have left it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.get_model_weights(MODEL).DEFAULT
    return tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)


def share_of(data, label):
    """Percent of the validation samples with `label`."""
    per_class = json.loads((data / MANIFEST).read_text())["splits"]["val"]["per_class"]
    return 100 * per_class[label] / sum(per_class)


def test_pretrained_evaluates_the_cached_weights(torch_cache, sample_shards, tmp_path, capsys):
    torch_cache.parent.mkdir(parents=True)
    torch.save(picking(PICKED), torch_cache)
    report = train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"),
                    "--pretrained", "--evaluate"])
    assert report["acc1_best"] == pytest.approx(share_of(sample_shards, PICKED))
    assert f"trainer: evaluating the weights in {torch_cache}\n" in capsys.readouterr().out


def test_pretrained_absent_from_the_cache_is_one_line_naming_the_file(torch_cache, sample_shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"), "--pretrained"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trainer: --pretrained: ResNet18_Weights.IMAGENET1K_V1 are not in "
                                                   f"the torch cache ({torch_cache}) and this run downloads nothing")


@pytest.mark.parametrize("saved_as", ["state_dict", "examples_checkpoint"])
def test_a_file_of_plain_weights_is_evaluated(saved_as, sample_shards, tmp_path):
    weights = picking(PICKED)
    if saved_as == "examples_checkpoint":  # pytorch/examples' checkpoint.pth.tar of a DataParallel model
        weights = {"epoch": 90, "arch": MODEL, "best_acc1": 69.8,
                   "state_dict": {f"module.{name}": value for name, value in weights.items()}}
    torch.save(weights, tmp_path / "weights.pth")
    report = train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"),
                    "--resume", str(tmp_path / "weights.pth"), "-e"])
    assert report["acc1_best"] == pytest.approx(share_of(sample_shards, PICKED))


def test_training_starts_from_plain_weights_and_its_rerun_resumes_its_own_checkpoint(sample_shards, tmp_path,
                                                                                     capsys):
    torch.save(picking(PICKED), tmp_path / "weights.pth")
    command = [*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"),
               "--resume", str(tmp_path / "weights.pth"), "--lr", "1e-12", "--epochs", "1"]
    train([*command, "--stop-step-num", "1"])
    assert "trainer: training starts from the weights in" in capsys.readouterr().out
    final = train(command)  # lr ~0: the weights stay those picking PICKED through the epoch
    said = capsys.readouterr().out
    assert "trainer: --output-dir holds this run's checkpoint" in said and "resuming from" in said
    assert final["acc1_best"] == pytest.approx(share_of(sample_shards, PICKED))


def test_pretrained_with_another_start_is_refused(torch_cache, sample_shards, tmp_path, capsys):
    torch.save(picking(PICKED), tmp_path / "weights.pth")
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"), "--pretrained",
               "--resume", str(tmp_path / "weights.pth")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"trainer: --pretrained starts from torchvision's weights, --resume "
                                       f"{tmp_path / 'weights.pth'} from others: give one of them\n")


def test_weights_of_another_model_are_one_line(sample_shards, tmp_path, capsys):
    torch.save(torchvision.models.get_model("resnet34", num_classes=1000).state_dict(), tmp_path / "weights.pth")
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run"),
               "--resume", str(tmp_path / "weights.pth"), "-e"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"trainer: the weights in {tmp_path / 'weights.pth'} do not fit --model {MODEL} (")
