"""Frozen backbone, prefix attention, prefix bank, pooling and the encoders built on them."""
