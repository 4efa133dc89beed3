"""A lean DDP ImageNet trainer around pipeline.make_loader: `python -m trainer --help`."""
