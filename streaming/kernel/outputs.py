"""File outputs written atomically: a temporary file in the same folder, renamed over the target on success.

Every file a CLI command writes (`replay --to/--dlq`, `aggregate --to/--dlq`, `validate --json`,
the synthetic tick files) goes through `AtomicFile`, so a crash, a kill or an error never
leaves a file at the output name that looks complete: either the previous complete file is
still there, or the new complete one. A SIGKILL can leave the hidden temporary file behind
(`.NAME.tmp-PID-RANDOM` next to the target), never the target itself.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from streaming.kernel.errors import SourceError


def _default_mode() -> int:
    # mkstemp creates 0600; a plain open() would give 0666 minus the umask, which is what users expect.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file written under a temporary name and renamed to `path` by `commit()`.

    `discard()` (also what leaving a `with` block by an exception does, Ctrl+C included)
    removes the temporary file and leaves whatever was at `path` untouched.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=folder)
        except OSError as exc:
            raise SourceError(f"cannot write {self.path}: {exc.strerror}") from None
        self.tmp_path = Path(tmp)
        with contextlib.suppress(OSError):
            os.fchmod(fd, _default_mode())
        self._fh: IO[bytes] | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        """Append `data` to the temporary file."""
        if self._fh is None:
            raise ValueError(f"{self.path}: already committed or discarded")
        try:
            self._fh.write(data)
        except OSError as exc:
            self.discard()
            raise SourceError(f"cannot write {self.path}: {exc.strerror}") from None

    def flush(self) -> None:
        """Hand what was written to the OS (still under the temporary name)."""
        if self._fh is not None:
            self._fh.flush()

    def commit(self) -> None:
        """fsync the temporary file, rename it to the target, fsync the folder."""
        if self._fh is None:
            raise ValueError(f"{self.path}: already committed or discarded")
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            fh.close()
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            raise SourceError(f"cannot write {self.path}: {exc.strerror}") from None
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file; the target keeps its previous content (or stays absent)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()

    @property
    def open(self) -> bool:
        """True until committed or discarded."""
        return self._fh is not None

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self.open:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_files(*paths: Path | str | None) -> Iterator[list[AtomicFile | None]]:
    """Several outputs that appear together: all committed when the block ends normally, none otherwise.

    A None path gives None in its place (an optional output such as `--dlq`).
    """
    files: list[AtomicFile | None] = []
    try:
        for path in paths:
            files.append(AtomicFile(path) if path is not None else None)
        yield files
    except BaseException:
        for f in files:
            if f is not None:
                f.discard()
        raise
    for f in files:
        if f is not None and f.open:
            f.commit()


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with AtomicFile(path) as out:
        out.write(data)
