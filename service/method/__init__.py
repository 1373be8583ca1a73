"""The method: train task prefixes (PEFT), evaluate fixed representations with probes, task similarity."""
