"""Test support: the shared helpers every tier uses (one home each).

- ``fake_encoder``: ``FakeEncoder`` (the ``Encoder`` protocol without a model), ``FAKE_SPEC``, ``fake_bank``
- ``prefixes``: random prefix tensors and files for a ``BackboneSpec`` (``random_kv``, ``prefix_bytes``, ...)
- ``models``: tiny random-weight BERT/RoBERTa folders (``save_tiny``)
- ``http``: an app on the fake encoder (``fake_app``), error-body checks, the table of bad inputs
- ``metrics``: ``metric_value(text, name, labels)`` over Prometheus text (``prometheus_client.parser``);
  ``scrape(client, name, **labels)`` reads it from a server's ``GET /metrics``
- ``waiting``: ``wait_until`` / ``async_wait_until``: poll a condition with a deadline (never sleep to
  sync; ``TimeoutError`` naming what). One implementation: ``service/waiting.py``, re-exported
- ``server_process``: real server processes through the one launcher ``service.procs.ServerProcess``
  (shared with the benchmarks): ``serve_process(log, *args)``, ``ray_process(log, *args)``,
  ``stop_gracefully(server)``; ``free_port`` (``service.procs``) for a server that must be told its port
- ``inthread``: ``running_server(app, settings)``: the real uvicorn server in a thread, base URL on port 0
- ``registry``: ``clocked_registry(folder, **limits)`` on a ``ManualClock``
- ``batching``: ``run_scenario(coro_fn, timeout)``, ``held_request(batcher, fake, bank, slots)``;
  ``watching``: ``until_watching(watcher, folder)``; ``imports``: ``loaded_after(imports, *packages)``.
  What a ``Batcher`` holds is public: ``batcher.waiting_texts()``, ``batcher.stopping``, ``queue_depth``
- ``heads``: head files with seeded weights; ``reference_predictions`` (scikit-learn with a head's
  weights), ``head_file`` (a head file read by safetensors), ``check_predictions`` (a /predict document
  held to both)
- documentation examples: ``doc_examples`` (read from the Markdown), ``example_plan`` (run, or listed
  with the reason it cannot run here), ``example_live`` (``Live``: the server and shell they run in),
  ``example_routes`` (``curl`` checks per route), ``example_checks`` (``run_example``; commands, python)
- ``install``: a newcomer's clone of HEAD and its serve install (``clone_and_install``,
  ``assert_lean_cpu_install``, ``newcomer_env``)
- ``fixtures``: the pytest fixtures, registered by ``tests/conftest.py`` through ``pytest_plugins``

Helpers are imported from here (``from tests.support.http import fake_app``); fixtures are requested by
name. Nothing is imported from ``tests.conftest``. No test reads a ``_private`` attribute of another
object, patches or imports a private name, or sleeps (``tests/unit/test_tests_house.py`` checks).
"""
