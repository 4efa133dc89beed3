"""What every package below builds on: atomic file writes, the on-disk data layout, the data errors, the
command-line conventions. It imports none of them."""
