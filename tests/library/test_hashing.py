"""Tests of neuro_pipeline.hashing: file and directory content hashes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from neuro_pipeline.hashing import hash_directory, hash_file, short_version


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    return root


def test_hash_file_is_sha256_of_bytes(tmp_path):
    data = b"x" * (3 * 1024 * 1024 + 17)  # several read chunks
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path) == hashlib.sha256(data).hexdigest()
    assert hash_file(str(path)) == hash_file(path)


def test_hash_file_rejects_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="expects a file; got the directory"):
        hash_file(tmp_path)


def test_hash_directory_depends_on_content_not_location(tmp_path):
    first = _tree(tmp_path / "one")
    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second)
    assert hash_directory(first) == hash_directory(second)
    assert len(hash_directory(first)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "config.json").write_text('{"a": 2}'),   # edited content
        lambda root: (root / "config.json").rename(root / "conf.json"),  # renamed file
        lambda root: (root / "extra.txt").write_text(""),             # added empty file
        lambda root: (root / "sub" / "weights.bin").unlink(),          # removed file
    ],
)
def test_hash_directory_changes_with_any_file(tmp_path, change):
    root = _tree(tmp_path / "m")
    before = hash_directory(root)
    change(root)
    assert hash_directory(root) != before


def test_hash_directory_moving_bytes_between_files_changes_hash(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "x").write_bytes(b"12")
    (a / "y").write_bytes(b"3")
    b = tmp_path / "b"
    b.mkdir()
    (b / "x").write_bytes(b"1")
    (b / "y").write_bytes(b"23")
    assert hash_directory(a) != hash_directory(b)


def test_hash_directory_skips_dot_entries_and_pycache(tmp_path):
    root = _tree(tmp_path / "m")
    before = hash_directory(root)
    (root / ".gitattributes").write_text("*.bin filter=lfs")
    (root / ".cache").mkdir()
    (root / ".cache" / "blob").write_bytes(b"123")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert hash_directory(root) == before


def test_hash_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hash_directory(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="expects a directory; got the file"):
        hash_directory(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no files"):
        hash_directory(empty)
    (empty / ".hidden").write_text("x")
    with pytest.raises(ValueError, match="contains no files"):
        hash_directory(empty)


def test_short_version():
    digest = hashlib.sha256(b"abc").hexdigest()
    assert short_version(digest) == "ba7816bf8f01"
    with pytest.raises(ValueError, match="at least 12 digits; got 'abc'"):
        short_version("abc")
    with pytest.raises(ValueError, match="hex digest"):
        short_version("not-a-hex-digest!")
