"""Content hashes of files and directories, used to version models and inputs.

A model's version is :func:`hash_directory` of its folder, so activations computed with
one set of weights are never mixed up with those of another, whatever the folder is called.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["hash_file", "hash_directory", "directory_signature", "short_version"]

# Directory hashes of this process, keyed by the directory, valid while its stat signature
# (names, sizes, modification and change times, inodes) is unchanged.
_DIRECTORY_HASHES: dict[str, tuple[tuple, str]] = {}

_CHUNK_BYTES = 1 << 20


def hash_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks so large weight files never sit in memory.

    Parameters
    ----------
    path : str or path-like
        The file to hash.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory (use :func:`hash_directory`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = p.write_bytes(b"abc")
    >>> hash_file(p)[:12]
    'ba7816bf8f01'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"hash_file expects a file; got the directory {path}. "
                                "Use hash_directory for folders.")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_skipped(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


def _files(root: Path) -> list[tuple[str, Path]]:
    return sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and not _is_skipped(p.relative_to(root))
    )


def directory_signature(path: str | os.PathLike[str]) -> tuple[tuple[str, int, int, int, int], ...]:
    """The stat signature of the files :func:`hash_directory` reads: for each, its relative
    path, size, modification and change times (ns) and inode. Any write to a file changes
    its change time, so an unchanged signature means unchanged bytes; a changed one only
    means "hash again" (the hash decides whether the content changed)."""
    root = Path(path)
    out = []
    for relative, file_path in _files(root):
        st = file_path.stat()
        out.append((relative, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(out)


def hash_directory(path: str | os.PathLike[str], *, reuse: bool = True) -> str:
    """SHA-256 over the relative paths and bytes of every file below a directory.

    With ``reuse`` (the default) the hash computed earlier in this process is returned
    without reading the files again when the directory's :func:`directory_signature` has
    not changed, so watching a large model every few seconds costs a ``stat`` per file.

    Files are visited in sorted order of their relative POSIX paths, so the hash does not
    depend on the file system's listing order or on where the directory lives. Dot-files,
    dot-directories (``.git``, ``.cache``) and ``__pycache__`` are skipped, so they may
    change without changing the version. Renaming, adding, removing or editing any other
    file changes the hash.

    Parameters
    ----------
    path : str or path-like
        The directory to hash.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is a file.
    ValueError
        If the directory holds no file that is hashed (it is empty or holds only skipped
        entries).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text("{}")
    >>> h = hash_directory(d)
    >>> _ = (d / ".cache").write_text("ignored")
    >>> hash_directory(d) == h
    True
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Cannot hash directory {root}: it does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"hash_directory expects a directory; got the file {root}. "
                                 "Use hash_file for single files.")
    files = _files(root)
    if not files:
        raise ValueError(f"Cannot hash directory {root}: it contains no files "
                         "(dot-files and __pycache__ are ignored).")
    key = str(root.resolve())
    signature = directory_signature(root) if reuse else None
    cached = _DIRECTORY_HASHES.get(key)
    if reuse and cached is not None and cached[0] == signature:
        return cached[1]
    digest = hashlib.sha256()
    for relative, file_path in files:
        name = relative.encode("utf-8")
        # Length-prefix the name and the content so that no two different trees can
        # produce the same byte stream.
        digest.update(len(name).to_bytes(8, "big"))
        digest.update(name)
        digest.update(file_path.stat().st_size.to_bytes(8, "big"))
        with file_path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
    result = digest.hexdigest()
    if reuse:
        _DIRECTORY_HASHES[key] = (signature, result)
    return result


def short_version(h: str) -> str:
    """The first 12 hex digits of a hash, for display and for file and partition names.

    Parameters
    ----------
    h : str
        A hex digest as returned by :func:`hash_file` or :func:`hash_directory`.

    Returns
    -------
    str
        ``h[:12]``.

    Raises
    ------
    ValueError
        If ``h`` is shorter than 12 characters or is not hexadecimal.

    Examples
    --------
    >>> short_version("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    'ba7816bf8f01'
    """
    if len(h) < 12 or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise ValueError(f"short_version expects a hex digest of at least 12 digits; got {h!r}.")
    return h[:12].lower()
