"""The one embedding pipeline: which prefixes a request gets (names, served models of models.json, the
default), and that its vectors are the engine's, for every route alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher
from service.engine.prefix import BASE_NAME
from service.errors import ModelUnavailable, NoActivePrefixes, PrefixDisabled, PrefixNotFound
from service.pipeline import EmbeddingPipeline
from service.registry.registry import PrefixRegistry
from service.registry.served import MODELS_FILE, parse_served_models, pinned_document
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.prefixes import write_prefix


def _folder(tmp_path: Path, names: tuple[str, ...] = ("alpha", "beta", "gamma")) -> Path:
    for i, name in enumerate(names):
        write_prefix(tmp_path, name, FAKE_SPEC, seed=i)
    return tmp_path


def _pipeline(folder: Path, **options: object) -> tuple[EmbeddingPipeline, PrefixRegistry]:
    registry = PrefixRegistry(folder, FAKE_SPEC)
    registry.load()
    batcher = Batcher(FakeEncoder())
    opts: dict[str, object] = {"served_name": "fake-model"}
    opts.update(options)
    return EmbeddingPipeline(registry, batcher, **opts), registry  # type: ignore[arg-type]


def _pin(folder: Path, registry: PrefixRegistry, names: list[str], model: str = "fake-model") -> None:
    doc = pinned_document(registry.snapshot.bank, names, model)
    (folder / MODELS_FILE).write_text(json.dumps(doc))
    registry.refresh()


def test_requested_names_keep_their_order_and_must_be_known_and_enabled(tmp_path: Path) -> None:
    pipeline, registry = _pipeline(_folder(tmp_path))
    snap = registry.snapshot
    sel = pipeline.select(snap, ["gamma", BASE_NAME, "alpha"])
    assert sel.names == ["gamma", BASE_NAME, "alpha"]
    assert list(sel.slots) == snap.bank.indices(["gamma", BASE_NAME, "alpha"])  # resolved once, same slots
    with pytest.raises(PrefixNotFound, match=r"'nope'.*known prefixes: base, alpha, beta, gamma"):
        pipeline.select(snap, ["alpha", "nope"])
    registry.apply_patch({"beta": {"enabled": False}})
    with pytest.raises(PrefixDisabled, match="'beta'"):
        pipeline.select(registry.snapshot, ["beta"])


def test_enabled_default_follows_the_folder_and_include_base(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder, default_prefixes="enabled")
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME, "alpha", "beta", "gamma"]
    write_prefix(folder, "delta", FAKE_SPEC, seed=9)
    registry.refresh()
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME, "alpha", "beta", "delta", "gamma"]
    without_base, _ = _pipeline(folder, default_prefixes="enabled", include_base=False)
    assert without_base.select(registry.snapshot, None).names == ["alpha", "beta", "delta", "gamma"]
    registry.apply_patch({n: {"enabled": False} for n in ("alpha", "beta", "delta", "gamma")})
    with pytest.raises(NoActivePrefixes):
        without_base.select(registry.snapshot, None)


def test_without_models_json_the_default_model_is_base_alone(tmp_path: Path) -> None:
    pipeline, registry = _pipeline(_folder(tmp_path))
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME]
    assert pipeline.select_model(registry.snapshot, "fake-model").names == [BASE_NAME]


def test_a_served_model_is_fixed_a_dropped_file_never_joins_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    _pin(folder, registry, [BASE_NAME, "gamma", "alpha"])
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME, "gamma", "alpha"]
    write_prefix(folder, "delta", FAKE_SPEC, seed=9)
    registry.refresh()
    assert "delta" in registry.snapshot.enabled
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME, "gamma", "alpha"]  # unchanged
    assert pipeline.select_model(registry.snapshot, "fake-model").names == [BASE_NAME, "gamma", "alpha"]
    assert pipeline.select_model(registry.snapshot, "delta").names == ["delta"]  # a prefix by name


def test_a_member_missing_disabled_or_at_another_version_makes_the_model_unavailable(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    _pin(folder, registry, [BASE_NAME, "alpha", "beta"])
    registry.apply_patch({"beta": {"enabled": False}})
    with pytest.raises(ModelUnavailable, match="beta is disabled"):
        pipeline.select(registry.snapshot, None)
    registry.apply_patch({"beta": {"enabled": True}})
    write_prefix(folder, "alpha", FAKE_SPEC, seed=42)  # a new version of a pinned member
    registry.refresh()
    with pytest.raises(ModelUnavailable, match=r"alpha is at version [0-9a-f]{12}, the model pins"):
        pipeline.select_model(registry.snapshot, "fake-model")
    (folder / "beta.safetensors").unlink()
    registry.refresh()
    with pytest.raises(ModelUnavailable, match="beta is not loaded") as err:
        pipeline.select(registry.snapshot, None)
    assert "alpha is at version" in err.value.message  # every member at fault is named
    assert pipeline.select(registry.snapshot, ["alpha"]).names == ["alpha"]  # names still work


def test_a_broken_models_file_keeps_the_last_good_one_while_running(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    _pin(folder, registry, [BASE_NAME, "beta"])
    (folder / MODELS_FILE).write_text('{"models": {"fake-model": {"prefixes": [')
    registry.refresh()
    assert pipeline.select(registry.snapshot, None).names == [BASE_NAME, "beta"]
    assert [r.source for r in registry.snapshot.rejected] == [MODELS_FILE]
    cold, cold_registry = _pipeline(folder)  # a cold start has no last good version: refuse, say why
    with pytest.raises(ModelUnavailable, match="models.json: not valid JSON"):
        cold.select(cold_registry.snapshot, None)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"models": []}, "expected an object"),
        ({"version": 2, "models": {}}, "unknown version"),
        ({"models": {"m": {"prefixes": []}}}, "needs 1 to"),
        ({"models": {"m": {"prefixes": ["a", "a"]}}}, "'a' more than once"),
        ({"models": {"m": {"prefixes": [{"name": "a", "digest": "xyz"}]}}}, "64 hex"),
        ({"models": {"m": {"prefixes": [3]}}}, "a name or"),
        ({"models": {"bad name": {"prefixes": ["a"]}}}, "bad model name"),
        ({"default": "x", "models": {"m": {"prefixes": ["a"]}}}, "default 'x' is not one of"),
        ({"models": {"m": {"prefixes": ["a"], "dim": -1}}}, "positive integer"),
    ],
)
def test_models_file_errors_name_the_problem(doc: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_served_models(json.dumps(doc).encode())


def test_stated_dimension_is_checked(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    (folder / MODELS_FILE).write_text(
        json.dumps({"models": {"m": {"prefixes": ["alpha", "beta"], "dim": 24}}})
    )
    registry.refresh()
    with pytest.raises(ModelUnavailable, match="states dim 24, its 2 prefixes give 16"):
        pipeline.select_model(registry.snapshot, "m")


def test_unknown_model_lists_models_and_prefixes(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    _pin(folder, registry, ["alpha"], model="only-alpha")
    with pytest.raises(PrefixNotFound, match=r"'gpt'.*'only-alpha', 'fake-model'.*'alpha'"):
        pipeline.select_model(registry.snapshot, "gpt")


def test_embed_returns_the_engines_vectors_for_the_selection(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    pipeline, registry = _pipeline(folder)
    sel = pipeline.select(registry.snapshot, ["beta", BASE_NAME])
    texts = ["one text", "and another one"]

    async def scenario() -> np.ndarray:
        await pipeline.batcher.start()
        try:
            out = await pipeline.embed(texts, sel)
        finally:
            await pipeline.batcher.stop()
        assert out.prefixes == sel.prefixes
        assert out.prompt_tokens == 2 + 2 + 3 + 2  # whitespace words plus [CLS]/[SEP]
        return out.vectors

    vectors = asyncio.run(scenario())
    fake = pipeline.batcher.encoder
    assert isinstance(fake, FakeEncoder)
    want = np.stack([[fake.expected(t, p) for p in sel.prefixes] for t in texts])
    np.testing.assert_array_equal(vectors, want)
