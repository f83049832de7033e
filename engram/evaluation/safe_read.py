"""Reading files the sandbox could have touched, without letting their writer steer the reader.

Everything under an evaluation's working directory (the answers file, files named in channel
messages, output files) is written by the candidate, which can swap any of them, at any moment,
for a FIFO (an `open()` that never returns), a symlink to a file it should not choose (a device, a
secret, `/dev/zero`), a directory, or a file of many gigabytes. A `Path.is_file()` check followed
by `open()` does not help: the swap can happen in between.

So the trusted side opens such files here, and only here: every component of the path is opened
with `O_NOFOLLOW` relative to the directory the file must lie in (no symlink anywhere, no `..`),
the final open is non-blocking (a FIFO cannot stall it), and the opened descriptor -- not the path
-- is checked to be a regular file before a byte is read. Reading stops at a size cap and a time
cap; going over either is the writer's fault, reported as `UnsafeFile` with the reason.

Writing into such a directory (an input file for a running candidate) has the mirror-image danger:
a directory the candidate replaced with a symlink would take the runner's write anywhere on the
host. `write_beneath` walks the same way and creates the file afresh, never through a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SECONDS = 10.0
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = _OPEN_FLAGS | os.O_DIRECTORY


class UnsafeFile(Exception):
    """A file written by untrusted code cannot be read safely; the message says why."""


def read_untrusted(
    path: str | Path, *, within: str | Path, max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS, missing_ok: bool = False,
) -> bytes | None:
    """The bytes of regular file `path`, which must lie inside directory `within`.

    `within` itself is trusted (the runner made it); nothing below it is. Returns None for a
    missing file when `missing_ok`, and raises `UnsafeFile` for anything else that is not a
    regular file of at most `max_bytes` readable within `max_seconds`.
    """
    relative = _relative_parts(Path(path), Path(within))
    try:
        fd = _open_beneath(Path(within), relative)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UnsafeFile(f"{path} does not exist") from None
    try:
        return _read_regular(fd, path, max_bytes, max_seconds)
    finally:
        os.close(fd)


def write_beneath(path: str | Path, data: bytes, *, within: str | Path) -> None:
    """Write `data` to file `path` inside directory `within`, creating it (and missing directories)
    if needed, without following any link the untrusted side may have put on the way. An existing
    file is truncated in place (its owner stays); anything but a regular file there is refused."""
    parts = _relative_parts(Path(path), Path(within))
    directory = _open_dirs_beneath(Path(within), parts[:-1], create=True)
    try:
        try:
            fd = os.open(parts[-1], os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        except FileNotFoundError:
            fd = _create(parts[-1], directory, path)
        except OSError as exc:  # a link (ELOOP), a FIFO nobody reads (ENXIO), a directory (EISDIR)
            raise UnsafeFile(f"{path} cannot be written: {exc.strerror or exc}") from None
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise UnsafeFile(f"{path} is not a plain regular file ({_kind(info.st_mode)})")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _create(name: str, directory: int, path: str | Path) -> int:
    try:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                       dir_fd=directory)
    except OSError as exc:
        raise UnsafeFile(f"{path} cannot be created: {exc.strerror or exc}") from None


def _relative_parts(path: Path, within: Path) -> list[str]:
    """The components of `path` below `within`, refusing anything that climbs out of it."""
    if path.is_absolute():
        try:
            path = path.relative_to(within)
        except ValueError:
            raise UnsafeFile(f"{path} is outside {within}") from None
    parts = list(path.parts)
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
        raise UnsafeFile(f"{path} is not a plain path below {within}")
    return parts


def _open_beneath(root: Path, parts: list[str]) -> int:
    """Open `root/parts...` one component at a time, following no symlink on the way."""
    directory = _open_dirs_beneath(root, parts[:-1], create=False)
    try:
        return os.open(parts[-1], _OPEN_FLAGS, dir_fd=directory)
    except OSError as exc:
        raise _as_unsafe(exc, root / os.sep.join(parts)) from None
    finally:
        os.close(directory)


def _open_dirs_beneath(root: Path, parts: list[str], *, create: bool) -> int:
    """A descriptor of directory `root/parts...`, reached without following a link."""
    directory = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=directory)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=directory)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    raise UnsafeFile(f"{part} in {root / os.sep.join(parts)} is not a directory") from None
                raise _as_unsafe(exc, root / os.sep.join(parts)) from None
            os.close(directory)
            directory = child
    except BaseException:
        os.close(directory)
        raise
    return directory


def _as_unsafe(error: OSError, path: Path) -> Exception:
    if isinstance(error, FileNotFoundError):
        return error
    if error.errno == errno.ELOOP:
        return UnsafeFile(f"{path} is a symbolic link, not a file")
    return UnsafeFile(f"{path} cannot be opened: {error.strerror or error}")


def _read_regular(fd: int, path: str | Path, max_bytes: int, max_seconds: float) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{path} is not a regular file ({_kind(info.st_mode)})")
    if info.st_nlink > 1:  # a hard link to a file its writer did not create (e.g. the runner's)
        raise UnsafeFile(f"{path} has other names (hard links); only files written afresh are read")
    if info.st_size > max_bytes:
        raise UnsafeFile(f"{path} is larger than the {max_bytes} bytes allowed ({info.st_size} bytes)")
    with contextlib.suppress(OSError):  # reads of a regular file then block as usual, never spin
        os.set_blocking(fd, True)
    deadline = time.monotonic() + max_seconds
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise UnsafeFile(f"{path} could not be read within {max_seconds:g} s")
        chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:  # grew while being read
            raise UnsafeFile(f"{path} is larger than the {max_bytes} bytes allowed")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return name
    return "not a regular file"
