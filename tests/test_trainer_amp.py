"""The training step never waits for the device: no host synchronisation between print boundaries.

On a GPU, torch.cuda.set_sync_debug_mode catches any synchronising call (`python -m bench doctor` runs it);
here the same step is run under the CPU form of the guard, which catches the tensor-to-Python conversions
that are what syncs a GPU in such code (GradScaler's overflow check, a loss read every step)."""
import pytest
import torch

from trainer.syncs import HostSync, no_host_sync

CPU = torch.device("cpu")


def test_the_guard_catches_a_read_of_a_tensor_value():
    loss = torch.ones(())
    with pytest.raises(HostSync, match=r"Tensor\.item\(\)"), no_host_sync(CPU):
        loss.item()
    with pytest.raises(HostSync, match="__bool__"), no_host_sync(CPU):
        bool(loss > 0)
    with no_host_sync(CPU):
        (loss * 2).add_(1)  # device work alone passes


def fp16_step(fused):
    """One GradScaler step of fp16 autocast training, as the trainer takes it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)
    scaler = torch.amp.GradScaler("cpu")
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    with no_host_sync(CPU):
        with torch.autocast("cpu", torch.float16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def test_gradscaler_reads_its_overflow_flag_on_the_host_unless_the_optimizer_is_fused():
    with pytest.raises(HostSync, match=r"Tensor\.item\(\)"):
        fp16_step(fused=False)
    fp16_step(fused=True)  # the trainer's optimizer: the flag stays on the device


def test_the_trainer_builds_a_fused_optimizer():
    from trainer.optim import build_optimizer

    class Args:
        lr, momentum, weight_decay, nesterov, no_bn_weight_decay = 0.1, 0.9, 1e-4, False, False

    optimizer = build_optimizer(torch.nn.Linear(2, 2), Args)
    assert optimizer.defaults["fused"] and optimizer._step_supports_amp_scaling


INIT_SCALE = 2.0**18  # high enough that this net's first two fp16 steps overflow and are skipped, as on a GPU


def train_fp16(optimizer_for, steps=6):
    """Parameters before and after `steps` fp16 GradScaler steps of a small conv net, and the scales."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 3))
    initial = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer, scaler = optimizer_for(model), torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    scales = []
    for _ in range(steps):
        with torch.autocast("cpu", torch.float16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    return initial, torch.cat([p.detach().flatten() for p in model.parameters()]), scales


def test_skipped_fp16_steps_leave_the_trainer_optimizer_where_reference_sgd_is():
    from trainer.optim import build_optimizer

    class Args:
        lr, momentum, weight_decay, nesterov, no_bn_weight_decay = 0.1, 0.9, 1e-4, True, False

    def reference(model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True,
                               foreach=False)

    initial, ours, scales = train_fp16(lambda model: build_optimizer(model, Args))
    _, expected, _ = train_fp16(reference)
    assert scales[0] < INIT_SCALE and not torch.equal(ours, initial), "steps were skipped, then taken"
    assert torch.allclose(ours, expected, atol=1e-6)
