"""Source value: does a trained prefix beat ``base`` on its own task's held-out test split?

The one probe (service/method/probes.py, C in {0.001, 0.01, 0.1} by stratified 3-fold CV) on the
prefix's vectors of the training examples, against the same probe on their ``base`` vectors (the
plain backbone, as served), both scored on the test split that training never saw; the gain comes
with its paired standard error over the same test texts. Recorded as metadata ``source_value``.
"""

from __future__ import annotations

from typing import Any

from service.method.data import TaskData
from service.method.probes import paired_gain, score_probe
from service.method.train import TrainResult

CS = (0.001, 0.01, 0.1)


def source_value(result: TrainResult, train: TaskData, test: TaskData) -> dict[str, Any]:
    """The probe on the kept prefix's vectors against the probe on base, on ``test``."""
    learner = result.learner
    x_train, base_train = learner.vectors(train.name, 0).numpy(), learner.base(train.name, 0).numpy()
    x_test, base_test = result.encode(test)
    base = score_probe(base_train, train.labels, base_test, test.labels, cs=CS)
    prefix = score_probe(x_train, train.labels, x_test, test.labels, cs=CS)
    gain, se = paired_gain(prefix, base)
    return {
        "n_probe_train": len(train),
        "n_test": len(test),
        "base": {"accuracy": base.accuracy, "cv_accuracy": base.cv_accuracy},
        "prefix": {"accuracy": prefix.accuracy, "cv_accuracy": prefix.cv_accuracy},
        "gain": gain,
        "gain_se": se,
    }
