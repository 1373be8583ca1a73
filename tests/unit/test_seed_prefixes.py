"""docker/seed-prefixes.sh, the Kubernetes init container that seeds an empty prefix volume with the
image's shipped prefixes: run for real on folders, with the repository's prefixes/ as the source."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "seed-prefixes.sh"
SHIPPED = REPO / "prefixes"


def seed(target: Path, source: Path = SHIPPED) -> str:
    done = subprocess.run([str(SCRIPT), str(target), str(source)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_empty_volume_gets_every_shipped_file_byte_for_byte(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    out = seed(volume)
    assert "copied" in out
    assert tree(volume) == tree(SHIPPED)  # no staging folder left behind
    assert any(name.endswith(".safetensors") for name in tree(volume))
    for name in tree(SHIPPED):
        if (SHIPPED / name).is_file():
            assert filecmp.cmp(SHIPPED / name, volume / name, shallow=False), name


def test_a_volume_with_anything_in_it_is_left_as_it_is(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "mine.safetensors").write_bytes(b"the operator's own prefix")
    (volume / ".state").mkdir()
    out = seed(volume)
    assert "left as it is" in out
    assert tree(volume) == [".state", "mine.safetensors"]
    assert (volume / "mine.safetensors").read_bytes() == b"the operator's own prefix"
    # a second seeding of a seeded volume changes nothing either
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    seed(seeded)
    before = {p: p.stat().st_mtime_ns for p in seeded.rglob("*")}
    assert "left as it is" in seed(seeded)
    assert {p: p.stat().st_mtime_ns for p in seeded.rglob("*")} == before


def test_a_fresh_filesystems_lost_and_found_does_not_count(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)
    seed(volume)
    assert tree(volume) == sorted(["lost+found", *tree(SHIPPED)])


def test_a_failed_copy_fails_the_init_container(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    done = subprocess.run(
        [str(SCRIPT), str(volume), str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0  # the pod does not start with a half-seeded volume
    assert list(volume.iterdir()) == []  # and its next try finds the volume empty again
