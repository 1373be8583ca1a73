"""Assembling a split-archive backbone (service/backbones/install.py) on a small synthetic archive:
the parts read as one file, digests checked, only listed files kept, provenance written last, and a
failed install leaves the previous one in place."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from service.backbones.catalog import PROVENANCE_FILE, KnownBackbone, SplitArchive, installed_folder
from service.backbones.install import InstallError, PartsReader, assemble, verify

FILES = {
    "config.json": b'{"model_type": "toy"}',
    "model.safetensors": bytes(range(256)) * 300,
    "sub/a.txt": b"a",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split_archive(folder: Path, parts: int = 3) -> tuple[list[Path], KnownBackbone]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in FILES.items():
            zf.writestr(f"toy/{rel}", data)
        zf.writestr("toy/desktop.ini", b"junk that is not kept")
    data = buf.getvalue()
    cut = [len(data) * i // parts for i in range(parts + 1)]
    paths = []
    for i in range(parts):
        path = folder / f"toy.zip.{i + 1:03d}"
        path.write_bytes(data[cut[i] : cut[i + 1]])
        paths.append(path)
    archive = SplitArchive(
        packages=tuple(f"toy-part-{i}==1" for i in range(parts)),
        member_suffix="/toy.zip.",
        sha256=_sha(data),
        root="toy",
        files={rel: _sha(content) for rel, content in FILES.items()},
    )
    return paths, KnownBackbone("toy", "a test archive", "mit", Path("prefixes-toy"), archive=archive)


def test_parts_read_as_one_file(tmp_path: Path) -> None:
    parts, _ = _split_archive(tmp_path, parts=4)
    whole = b"".join(p.read_bytes() for p in parts)
    rng = random.Random(0)
    with PartsReader(parts) as reader:
        assert reader.read() == whole
        for _ in range(200):
            start, n = rng.randrange(len(whole)), rng.randrange(1, 5000)
            reader.seek(start)
            assert reader.read(n) == whole[start : start + n]
        assert reader.seek(-10, io.SEEK_END) == len(whole) - 10
        assert reader.read() == whole[-10:]


def test_assemble_keeps_listed_files_verified_with_provenance(tmp_path: Path) -> None:
    parts, toy = _split_archive(tmp_path)
    result = assemble(toy, parts, tmp_path / "backbones")
    folder = tmp_path / "backbones" / "toy"
    assert result.folder == folder
    assert installed_folder(toy, tmp_path / "backbones") == folder
    for rel, data in FILES.items():
        assert (folder / rel).read_bytes() == data
    assert not (folder / "desktop.ini").exists()
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    archive = toy.archive
    assert archive is not None
    assert provenance["licence"] == "mit"
    assert provenance["archive_sha256"] == archive.sha256
    assert provenance["packages"] == list(archive.packages)
    assert verify(toy, folder) == []
    (folder / "sub" / "a.txt").write_bytes(b"b")
    assert verify(toy, folder) == [f"{folder / 'sub' / 'a.txt'}: sha256 {_sha(b'b')}, expected {_sha(b'a')}"]
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == ["toy"]  # no temp folder left


def test_a_bad_part_or_file_fails_and_keeps_the_previous_install(tmp_path: Path) -> None:
    parts, toy = _split_archive(tmp_path)
    dest = tmp_path / "backbones"
    assemble(toy, parts, dest)
    before = (dest / "toy" / PROVENANCE_FILE).read_text()

    data = bytearray(parts[1].read_bytes())
    data[5] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(InstallError, match="assembled archive has sha256 .* expected"):
        assemble(toy, parts, dest)
    assert (dest / "toy" / PROVENANCE_FILE).read_text() == before
    assert verify(toy, dest / "toy") == []

    parts, toy = _split_archive(tmp_path)
    archive = toy.archive
    assert archive is not None
    files = {**archive.files, "config.json": "0" * 64}
    wrong = replace(toy, archive=replace(archive, files=files))
    with pytest.raises(InstallError, match="toy/config.json has sha256"):
        assemble(wrong, parts, dest)
    missing = replace(toy, archive=replace(archive, files={**files, "absent.bin": "0" * 64}))
    with pytest.raises(InstallError, match="archive has no toy/absent.bin"):
        assemble(missing, parts, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["toy"]
    assert verify(toy, dest / "toy") == []


def test_an_uninstalled_backbone_names_the_install_command(tmp_path: Path) -> None:
    _, toy = _split_archive(tmp_path)
    with pytest.raises(RuntimeError, match="python -m service backbones install toy"):
        installed_folder(toy, tmp_path / "nowhere")
