"""The recipe pieces that need no data: the EMA of the weights, mixup/CutMix, and which evaluation is best."""
import pytest
import torch

from trainer.ema import EMA
from trainer.loop import Best, Evaluation
from trainer.mixing import Mixing
from trainer.syncs import no_host_sync

CPU = torch.device("cpu")


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def test_the_ema_follows_the_weights_with_its_decay_and_never_syncs():
    model = small_model()
    ema = EMA(model, decay=0.9, every=1)
    start = [p.clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with no_host_sync(CPU):
        ema.update(global_step=1)
    for average, before in zip(ema.model.parameters(), start):
        assert torch.allclose(average, before + 0.1)  # 0.9 of the old, 0.1 of the new
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_updating_every_k_steps_keeps_the_time_constant():
    model = small_model()
    every_step, every_third = EMA(model, 0.9, every=1), EMA(model, 0.9, every=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    for step in range(1, 4):
        every_step.update(step)
        every_third.update(step)
    for a, b in zip(every_step.model.parameters(), every_third.model.parameters()):
        assert torch.allclose(a, b)  # a constant target: 3 updates at 0.9 == 1 update at 0.9**3


def batch():
    images = torch.stack([torch.full((3, 8, 8), float(k)) for k in range(4)])
    return images, torch.tensor([0, 1, 2, 0])


def test_mixup_blends_each_image_with_the_batch_reversed_and_scores_both_labels():
    images, labels = batch()
    mixed, criterion = Mixing(mixup=0.4, cutmix=0, switch_prob=0.5, seed=1, rank=0)(images, labels,
                                                                                     torch.nn.CrossEntropyLoss(), 7, 0)
    lam = 1 - (mixed[0, 0, 0, 0] - 0) / 3  # image 0 (value 0) blended with image 3 (value 3)
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0))
    logits = torch.randn(4, 3)
    ce = torch.nn.CrossEntropyLoss()
    expected = lam * ce(logits, labels) + (1 - lam) * ce(logits, labels.flip(0))
    assert criterion(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cutmix_pastes_a_box_whose_area_is_the_weight_of_the_other_label():
    images, labels = batch()
    mixing = Mixing(mixup=0, cutmix=1.0, switch_prob=0.5, seed=1, rank=0)
    mixed, criterion = mixing(images, labels, torch.nn.CrossEntropyLoss(reduction="sum"), 3, 0)
    pasted = (mixed[0, 0] == 3).float().mean().item()  # image 0's pixels now from image 3
    logits = torch.zeros(4, 3)
    logits[torch.arange(4), labels] = 50.0  # sure of the original labels: only the pasted share costs
    expected = (1 - pasted) * 0 + pasted * torch.nn.functional.cross_entropy(logits, labels.flip(0), reduction="sum")
    assert criterion(logits, labels).item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)
    assert torch.equal(images, batch()[0]), "the loader's batch is left as it was"


def test_the_same_step_draws_the_same_mixing_so_a_resume_repeats_it():
    images, labels = batch()
    first = Mixing(0.4, 1.0, 0.5, seed=2, rank=1)(images, labels, torch.nn.CrossEntropyLoss(), 11, 1)[0]
    again = Mixing(0.4, 1.0, 0.5, seed=2, rank=1)(images, labels, torch.nn.CrossEntropyLoss(), 11, 1)[0]
    other = Mixing(0.4, 1.0, 0.5, seed=2, rank=1)(images, labels, torch.nn.CrossEntropyLoss(), 12, 1)[0]
    assert torch.equal(first, again) and not torch.equal(first, other)


def evaluation(acc1):
    return Evaluation(acc1, acc1 + 10, 1.0, 100)


def test_the_best_evaluation_says_which_weights_had_it():
    best, new = Best().after({"raw": evaluation(40.0), "ema": evaluation(42.0)})
    assert new and (best.acc1, best.weights) == (42.0, "ema")
    best, new = best.after({"raw": evaluation(41.0), "ema": evaluation(41.5)})
    assert not new and best.weights == "ema"
    assert best.state() == {"acc1_best": 42.0, "acc5_best": 52.0, "best_weights": "ema"}
