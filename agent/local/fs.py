"""Writing the agent's files: atomically, with their mode and owner, only if changed.

Every configuration, environment, state and secret file the agent writes goes through
`write` (logs, the lock file and git checkouts are streams, not documents, and are
written by their owners). Atomic (temp file + fsync + rename) so a crash never leaves
a half-written config that supervisord or sh would read; "only if changed" is what
makes a second `agent boot` a no-op; mode and owner are set before the rename so a
secret is never briefly readable.

Disk errors (the policy): a failure to write (a full disk, a quota, a read-only or
vanished file system, permissions) is a `WriteError` naming the file, what went wrong
and what to do, on one line; the temporary file is removed, so the file is either the
old one, untouched, or the new one whole, never half-written. OSError alone names no
file when a write or fsync fails ("[Errno 28] No space left on device").
"""

from __future__ import annotations

import errno
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

# What to do about a write that failed, by errno; anything else gets the system's words only.
_ADVICE = {
    errno.ENOSPC: "the file system is full: free space there and run again",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota and run again",
    errno.EROFS: "the file system is read-only: remount it read-write and run again",
    errno.EACCES: "run as root or as the user that owns it",
    errno.EPERM: "run as root or as the user that owns it",
    errno.EIO: "the disk reported an I/O error: check the device (dmesg)",
}


class WriteError(AgentError):
    """A file the agent writes could not be written (see the module docstring)."""

    def __init__(self, what: str, path: Path, exc: OSError):
        reason = exc.strerror or exc.__class__.__name__
        advice = _ADVICE.get(exc.errno or 0)
        super().__init__(f"cannot {what} {path}: {reason}" + (f"; {advice}" if advice else "")
                         + ("; the old file is left as it was" if what == "write" and path.exists() else ""))


@dataclass(frozen=True)
class FileSpec:
    """A file to write: rendered templates are data until `write` applies them."""

    path: Path
    content: str
    mode: int = 0o644
    owner: str | None = None  # user name; None keeps the agent's own user

    def __repr__(self) -> str:  # never show contents: they may be secrets
        return f"FileSpec({str(self.path)!r}, mode={oct(self.mode)}, owner={self.owner!r})"


def owner_ids(user: str | None) -> tuple[int, int]:
    """uid/gid to chown to: the named user's, or our own."""
    if user is None:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def differs(spec: FileSpec) -> bool:
    """True when writing `spec` would change the file (content, mode or owner)."""
    uid, gid = owner_ids(spec.owner)
    try:
        st = spec.path.stat()
        same = (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (spec.mode, uid, gid)
        return not (same and spec.path.read_bytes() == spec.content.encode("utf-8"))
    except FileNotFoundError:
        return True


def write(spec: FileSpec) -> bool:
    """Write `spec` atomically; return False (and touch nothing) when already identical.
    WriteError, naming the file, when the disk refuses."""
    try:
        return _write(spec)
    except OSError as exc:
        raise WriteError("write", spec.path, exc) from None


def _write(spec: FileSpec) -> bool:
    if not differs(spec):
        return False
    data = spec.content.encode("utf-8")
    uid, gid = owner_ids(spec.owner)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=spec.path.parent, prefix=f".{spec.path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:  # closed on every path, the failing ones too
            os.fchmod(fd, spec.mode)
            if (uid, gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, uid, gid)
            handle.write(data)
            handle.flush()
            os.fsync(fd)
        os.replace(tmp, spec.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_all(specs: list[FileSpec]) -> list[Path]:
    """Write every spec; return the paths that changed."""
    return [spec.path for spec in specs if write(spec)]


def ensure_dir(path: Path, mode: int = 0o755, owner: str | None = None) -> None:
    """Create `path` (and parents) and set its mode and owner; WriteError when refused."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        uid, gid = owner_ids(owner)
        st = path.stat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
    except OSError as exc:
        raise WriteError("create the directory", path, exc) from None


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file (read from the end: logs can be large)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
