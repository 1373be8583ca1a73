"""Test support: the shared helpers every tier uses (one home each).

- ``fake_encoder``: ``FakeEncoder`` (the ``Encoder`` protocol without a model), ``FAKE_SPEC``, ``fake_bank``
- ``prefixes``: random prefix tensors and files for a ``BackboneSpec`` (``random_kv``, ``prefix_bytes``, ...)
- ``models``: tiny random-weight BERT/RoBERTa folders (``save_tiny``)
- ``http``: an app on the fake encoder (``fake_app``), error-body checks, the table of bad inputs
- ``metrics``: ``metric_value(text, name, labels)`` over Prometheus text (``prometheus_client.parser``)
- ``waiting``: ``wait_until`` / ``async_wait_until``: poll a condition with a deadline (never sleep to sync)
- ``server_process``: a real ``python -m service serve`` process on 127.0.0.1 (``ServerProcess``)
- ``batching``: ``waiting_texts(batcher)``; ``watching``: ``until_watching(watcher, folder)``
- ``fixtures``: the pytest fixtures, registered by ``tests/conftest.py`` through ``pytest_plugins``

Helpers are imported from here (``from tests.support.http import fake_app``); fixtures are requested by
name. Nothing is imported from ``tests.conftest``.
"""
