"""Atomic writes and tolerant readers: the only file primitives of the lab.

Writes go to a temporary file beside the target, are flushed to disk and renamed over it, so a reader (or a
kill -9) sees the old file or the new one, never half of one. Temporary files are named ``.<name>.<random>.tmp``
so a run can find and remove the ones a hard kill left behind (:func:`remove_stale_temps`).

Readers never raise for a missing, empty or half-written file: a JSON file that does not parse reads as the
default, and a JSONL file's torn last line (a process killed mid-write) is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptlab.errors import UserError

try:  # POSIX advisory locks, released by the kernel when the holder dies (even by kill -9)
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking (documented in docs/training.md)
    fcntl = None  # type: ignore[assignment]  # no module on this platform: checked before each use

TEMP_SUFFIX = ".tmp"
NO_ROOM_BYTES = 1 << 20  # a failed write with less than this left free is reported as a full disk


@functools.cache
def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask (for files other libraries write
    through mkstemp, 0600, that should read like the rest)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, content: str | bytes | Callable[[str], Any]) -> Path:
    """Write ``path`` atomically: ``content`` is text, bytes, or ``write(tmp_path)`` that writes the file.

    The result has the mode a plain ``open(path, "w")`` would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray):
                f.write(content)
        if callable(content):
            content(tmp)
        os.chmod(tmp, plain_file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # torch.save reports a full disk as a RuntimeError from its zip writer: name it for what it is
        full = isinstance(e, Exception) and not isinstance(e, OSError) and _no_room(path.parent)
        with contextlib.suppress(OSError):  # truncate first: a writer still holding the file open (torch's
            os.truncate(tmp, 0)  # zip writer, kept alive by the traceback) would keep its blocks in use
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    return path


def _no_room(folder: Path) -> bool:
    """True when the filesystem holding ``folder`` has (next to) no space left for an unprivileged writer."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < NO_ROOM_BYTES


def disk_full_error(e: BaseException, path: str | Path) -> OSError | None:
    """The "no space left" OSError naming ``path`` to raise in place of ``e`` when a full disk caused it (``e``
    itself or a cause it wraps, or a library's own non-OSError, e.g. safetensors', raised while the filesystem
    holding ``path`` has no room left, as :func:`atomic_write` judges); None otherwise."""
    from gptlab.errors import disk_full_cause

    if disk_full_cause(e) is None:
        if isinstance(e, OSError):  # an OSError says what it is (no room check: /proc has no room either)
            return None
        folder = Path(path)
        while not folder.exists() and folder != folder.parent:  # the filesystem that would have held it
            folder = folder.parent
        if not _no_room(folder):
            return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """A JSON file's dict, or ``default`` when it is missing, unreadable, torn or not a dict."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    return obj if isinstance(obj, dict) else default


def read_jsonl(path: str | Path) -> list[dict]:
    """The dict rows of a JSON-lines file; blank lines, torn lines and non-objects are skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row; if the file ends in a torn line (a hard kill mid-write), start on a fresh line."""
    path = Path(path)
    line = json.dumps(row) + "\n"
    with open(path, "ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content, or None when it is missing or does not parse."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def remove_stale_temps(folder: str | Path, names: tuple[str, ...] | None = None) -> int:
    """Delete the temporary files :func:`atomic_write` leaves when killed (``.<name>.*.tmp``) in ``folder``.

    ``names`` limits it to the temporaries of those files. Call it only while no writer is active there
    (under the run's lock). Returns the number of files removed.
    """
    n = 0
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if names is not None and not any(p.name.startswith(f".{name}.") for name in names):
            continue
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


class DirLock:
    """An exclusive lock held through a lock file (``flock``), as a context manager.

    Non-blocking (a trainer's run directory): a second process gets a one-line UserError naming the holder's
    pid. Blocking (a prepared-data folder): a second process waits, then finds the work done. The kernel drops
    the lock when its holder dies, so a kill -9 never leaves a stale lock behind.
    """

    def __init__(self, path: str | Path, holder: str, what: str = "folder", blocking: bool = False):
        self.path, self.holder, self.what, self.blocking = Path(path), holder, what, blocking
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        if fcntl is None or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            other = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            pid, _, what = other.partition(" ")
            raise UserError(
                f"the {self.what} {self.path.parent} is in use by another process (pid {pid or '?'}, "
                f"{what or 'unknown'}); wait for it to finish or stop it, or choose another {self.what}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.holder}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
