"""Named recipes: `--recipe NAME` sets the flags of a published training recipe, each still overridable on the
command line; `--recipe list` prints them with their source and what they reached there. None has been
reproduced by this project (it has had no GPU): the results are the sources' own."""
from dataclasses import dataclass, field

LIST = "list"  # --recipe list


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    result: str
    flags: dict = field(default_factory=dict)  # argparse dests -> values


def _ffcv(arch, epochs, top1, minutes, ramp):
    """FFCV's ffcv-imagenet configs (rn50: 8 x A100 at 512 per GPU, lr 1.7; rn18: 1 x A100 at 1024, lr 0.5): cyclic
    lr peaking at epoch 2, progressive resizing 160 -> 192 px, validation at 256 px from a 224/256 centre crop,
    label smoothing 0.1, no weight decay on BatchNorm. Not here: BlurPool, flip test-time augmentation."""
    rn50 = arch == "resnet50"
    return Recipe(
        f"ffcv-{'rn50' if rn50 else 'rn18'}-{epochs}", f"FFCV ffcv-imagenet {'rn50' if rn50 else 'rn18'}_configs/"
        f"{'rn50' if rn50 else 'rn18'}_{epochs}_epochs.yaml ({'8' if rn50 else '1'} x A100)",
        f"top-1 {top1} % in {minutes} min",
        dict(model=arch, epochs=epochs, lr_schedule="linear", warmup_epochs=2, lr_per_256=1.7 * 256 / 4096 if rn50
             else 0.5 * 256 / 1024, momentum=0.9, weight_decay=1e-4 if rn50 else 5e-5, label_smoothing=0.1,
             no_bn_weight_decay=True, batch_size=512 if rn50 else 1024, amp="fp16", channels_last=True,
             min_res=160, start_ramp=ramp[0], end_ramp=ramp[1], crop_size=192, val_crop_size=256,
             val_size=292))


RECIPES = (
    Recipe("resnet50-guide", "the ResNet-50 guide: 8 devices x batch 256, step LR", "top-1 75.86 % after 90 epochs",
           dict(model="resnet50", epochs=90, lr_schedule="step", batch_size=256, num_classes=1000, print_freq=20,
                skip_steps=5)),
    Recipe("vgg16-guide", "the VGG16 guide (pytorch/examples adapted): global batch 256 (--batch-size 32 on 8 "
           "devices), lr 0.01, fp16", "top-1 73.39 % on 1 device (1,024 img/s), 72.95 % on 8 (6,540 img/s)",
           dict(model="vgg16", epochs=90, lr=0.01, lr_schedule="step", amp="fp16", seed=1, batch_size=256)),
    Recipe("dle-resnet50", "NVIDIA DeepLearningExamples ResNet-50 v1.5 for PyTorch: lr 0.256 per 256, momentum "
           "0.875, cosine, 5 warmup epochs, weight decay 1/32768 (none on BatchNorm), label smoothing 0.1, 256 per "
           "GPU", "top-1 76.9 % after 90 epochs (its README; 77.1 % with AMP in its results)",
           dict(model="resnet50", epochs=90, lr_schedule="cosine", lr_per_256=0.256, warmup_epochs=5,
                momentum=0.875, weight_decay=3.0517578125e-05, no_bn_weight_decay=True, label_smoothing=0.1,
                batch_size=256, amp="fp16", channels_last=True)),
    *(_ffcv("resnet50", *row) for row in ((16, 73.8, 14.9, (11, 13)), (24, 75.6, 21.7, (17, 20)),
                                         (32, 76.6, 28.7, (23, 27)), (40, 77.2, 35.6, (29, 34)),
                                         (56, 78.0, 49.4, (41, 48)), (88, 78.4, 77.2, (65, 76)))),
    *(_ffcv("resnet18", *row) for row in ((16, 66.9, 35.0, (11, 13)), (24, 68.8, 51.6, (17, 20)),
                                         (32, 70.0, 68.9, (23, 27)), (40, 70.6, 85.5, (29, 34)),
                                         (56, 71.3, 119.4, (41, 48)), (88, 72.4, 187.3, (65, 76)))),
)
BY_NAME = {recipe.name: recipe for recipe in RECIPES}


def table():
    """The recipes as text, one per line: name, result, source."""
    width = max(len(name) for name in BY_NAME)
    return "\n".join(f"{r.name:<{width}}  {r.result}\n{'':<{width}}  {r.source}" for r in RECIPES)
