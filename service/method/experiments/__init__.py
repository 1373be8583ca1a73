"""Shared-trunk experiments: the depth table (issue 10), the recipe rows, the shipped prefixes and
their transfer (issue 11), the shipped prefixes' task heads (issue 21, ``heads.py``). ``python -m service.method.experiments --help``; RESULTS.md has the
commands that produced its numbers.

One process per source task; the task's texts (and, for rows with transfer, the three targets'
texts) run through the frozen trunk ONCE, and every row trains over that cache. Each run writes
``results/trunk/runs/<row>/<task>.seed<k>.json`` (dev metrics, source value, seconds) and the prefix
file ``results/prefixes/trunk/<row>/<task>.seed<k>.safetensors``; rows with transfer also write the
prefix's vectors of the targets' texts under ``.cache/trunk/``. Paths are relative to the working
directory (the repository root). Choices between rows are made on validation scores (dev split,
probe CV), never on a test split.
"""
