"""``train`` defaults to the shipped recipe (issue 22 item 1): the recipe is what the shipped files
record, ``--like FILE`` trains a file again, an all-layer prefix is warned about, the trunk path
shows a progress bar, and a dev score already perfect at step 0 stops at once."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import Backbone
from service.method.corpora import load_builtin
from service.method.data import protocol_splits
from service.method.prefix_io import load_prefixes, model_spec
from service.method.recipe import RECIPES, like
from service.method.train_command import ALL_LAYERS_WARNING
from service.registry.init_record import recorded_start

DATA = Path(__file__).parent.parent / "data"
SMS = str(DATA / "sms_spam_200.jsonl")
PREFIXES = Path(__file__).resolve().parents[2] / "prefixes"
FAST = ["--max-steps", "2", "--eval-every", "2", "--max-examples", "60", "--prefix-len", "2"]


def _train(*args: str) -> tuple[dict, str]:
    result = CliRunner().invoke(
        app, ["train", *args, "--no-calibrate"]
    )  # calibrating: test_calibration_commands
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :]), result.stderr


def test_the_shipped_recipe_is_what_the_shipped_files_record(minilm: Backbone) -> None:
    """Every shipped trunk prefix records the default recipe (its own text length and data size
    aside), and its recorded data protocol gives back exactly its training examples."""
    trunk = [p for p in load_prefixes([PREFIXES], minilm.spec) if p.first_layer > 0]
    assert trunk
    missing: list[str] = []
    for p in trunk:
        rec = like(p.metadata)
        expected = replace(
            RECIPES["shipped"], max_length=rec.config.max_length, max_examples=rec.config.max_examples
        )
        assert rec.config == expected, p.name
        assert rec.task == p.name
        assert rec.threads == 1
        try:
            data = replace(load_builtin(str(rec.data)), name=rec.task)
        except FileNotFoundError as exc:  # a data package or checkout this environment does not have
            missing.append(str(exc))
            continue
        cfg = rec.config
        train, dev, test = protocol_splits(
            data, holdout_fraction=cfg.holdout, max_examples=cfg.max_examples, dev_fraction=cfg.dev_fraction,
            seed=cfg.seed,
        )  # fmt: skip
        assert train.digest() == rec.train_digest, p.name
        assert (len(train), len(dev)) == (p.metadata["data"]["n_train"], p.metadata["data"]["n_dev"])
        assert test is not None
        assert len(test) == p.metadata["source_value"]["n_test"]
    if len(missing) == len(trunk):
        pytest.skip("; ".join(missing))


@pytest.mark.slow
def test_train_without_recipe_flags_trains_the_shipped_recipe(minilm: Backbone, tmp_path: Path) -> None:
    """No recipe flag (only fewer steps, for time): a shared-trunk prefix from layer 3 with the
    shipped recipe's settings, its source value measured on the held-out split, no warning."""
    out = tmp_path / "sms.safetensors"
    summary, stderr = _train(
        "--data", SMS, "--out", str(out), "--max-steps", "2", "--eval-every", "2", "--no-progress"
    )
    assert summary["first_layer"] == 3
    assert summary["recipe"] == "S=3 init=normal preserve=0 schedule=cosine"
    assert "acts in every layer" not in stderr
    (loaded,) = load_prefixes([out], minilm.spec)
    assert loaded.first_layer == 3
    assert loaded.position_convention == "none"
    training = loaded.metadata["training"]
    shipped = RECIPES["shipped"].training_record()
    assert {k: training[k] for k in shipped} == shipped | {"max_steps": 2, "eval_every": 2}
    assert loaded.metadata["data"]["protocol"] == RECIPES["shipped"].data_record()
    value = loaded.metadata["source_value"]
    assert value["n_test"] == 60  # 30 % of the 200 examples, held out before training
    assert value["n_probe_train"] == loaded.metadata["data"]["n_train"]


def test_like_trains_the_same_prefix_again(tiny_bert_path: Path, tmp_path: Path) -> None:
    """A file trained with non-default settings, then ``--like`` it: the same examples, the same
    prefix to the bit; a file trained on a file needs --data again."""
    first = tmp_path / "a.safetensors"
    flags = [
        "--first-layer",
        "1",
        "--lr",
        "0.05",
        "--schedule",
        "constant",
        "--holdout",
        "0.2",
        "--seed",
        "3",
    ]
    model = ["--model", str(tiny_bert_path), "--no-progress"]
    summary, _ = _train("--data", SMS, "--out", str(first), "--name", "spam", *model, *FAST, *flags)
    again = tmp_path / "b.safetensors"
    bad = CliRunner().invoke(app, ["train", "--like", str(first), "--out", str(again), *model])
    assert bad.exit_code == 2
    assert "trained on a file" in bad.output
    repeat, stderr = _train("--like", str(first), "--data", SMS, "--out", str(again), *model)
    assert "does not reproduce" not in stderr
    assert repeat["task"] == "spam"
    assert repeat["dev_metrics"] == summary["dev_metrics"]
    a, b = load_prefixes([first, again], model_spec(tiny_bert_path))
    assert torch.equal(a.key, b.key)
    assert torch.equal(a.value, b.value)
    assert b.metadata["data"]["train_digest"] == a.metadata["data"]["train_digest"]
    assert b.metadata["training"]["lr"] == 0.05
    # a changed data protocol is reported: the run does not reproduce the file
    _, stderr = _train("--like", str(first), "--data", SMS, "--out", str(again), "--seed", "4", *model)
    assert "does not reproduce" in stderr


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (["--first-layer", "0"], "first_layer 0"),
        (["--recipe", "peft", "--max-length", "24"], "PEFT positions"),
    ],
)
def test_an_all_layer_prefix_is_warned_about(
    tiny_bert_path: Path, tmp_path: Path, flags: list[str], why: str
) -> None:
    args = ["--data", SMS, "--out", str(tmp_path / "x.safetensors"), "--model", str(tiny_bert_path), *FAST]
    _, stderr = _train(*args, "--no-progress", *flags)
    assert ALL_LAYERS_WARNING.split("(")[0] in stderr
    assert why in stderr


def test_trunk_training_shows_a_progress_bar(tiny_bert_path: Path, tmp_path: Path) -> None:
    args = ["--data", SMS, "--out", str(tmp_path / "x.safetensors"), "--model", str(tiny_bert_path), *FAST]
    summary, stderr = _train(*args, "--first-layer", "1", "--max-examples", "140")
    assert summary["steps"] == 2
    assert "train sms_spam_200:   0%|" in stderr  # tqdm's bar
    assert "2/2 [" in stderr
    assert "step 0: dev macro-F1" in stderr
    assert "step 2: dev macro-F1" in stderr
    _, quiet = _train(*args, "--first-layer", "1", "--max-examples", "140", "--no-progress")
    assert "train sms_spam_200" not in quiet
    assert "dev macro-F1" not in quiet


def test_a_perfect_dev_score_at_step_0_stops_at_once(tiny_bert_path: Path, tmp_path: Path) -> None:
    """Two classes written with disjoint words: the probe on the untrained prefix already separates
    dev perfectly, so no step runs and the run says why."""
    rng = random.Random(0)
    words = {"a": ["apple", "pear", "plum", "grape"], "b": ["engine", "wheel", "brake", "motor"]}
    rows = [{"text": " ".join(rng.choices(words[c], k=6)), "label": c} for c in "ab" for _ in range(40)]
    path = tmp_path / "easy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "easy.safetensors"
    summary, stderr = _train(
        "--data", str(path), "--out", str(out), "--model", str(tiny_bert_path), "--first-layer", "1",
        "--max-steps", "125", "--no-progress",
    )  # fmt: skip
    assert summary["steps"] == 0
    assert summary["best_step"] == 0
    assert summary["dev_metrics"]["macro_f1"] == 1.0
    assert "dev macro-F1 is 1.0 at step 0" in summary["stopped"]
    assert "stopped: dev macro-F1 is 1.0 at step 0" in stderr
    (loaded,) = load_prefixes([out], model_spec(tiny_bert_path))
    start = recorded_start(loaded)
    assert start is not None
    assert torch.equal(loaded.key, start[0])  # the untrained prefix: the recorded start itself
    assert torch.equal(loaded.value, start[1])
