"""prefix-embed: one frozen encoder, many task prefixes, one batched forward call."""

__version__ = "0.1.0"
