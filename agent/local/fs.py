"""Writing the agent's files: atomically, with their mode and owner, only if changed.

Every configuration, environment, state and secret file the agent writes goes through
`write` (logs, the lock file and git checkouts are streams, not documents, and are
written by their owners). Atomic (temp file + fsync + rename) so a crash never leaves
a half-written config that supervisord or sh would read; "only if changed" is what
makes a second `agent boot` a no-op; mode and owner are set before the rename so a
secret is never briefly readable.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path


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
    """Write `spec` atomically; return False (and touch nothing) when already identical."""
    if not differs(spec):
        return False
    data = spec.content.encode("utf-8")
    uid, gid = owner_ids(spec.owner)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=spec.path.parent, prefix=f".{spec.path.name}.")
    try:
        os.fchmod(fd, spec.mode)
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, spec.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_all(specs: list[FileSpec]) -> list[Path]:
    """Write every spec; return the paths that changed."""
    return [spec.path for spec in specs if write(spec)]


def ensure_dir(path: Path, mode: int = 0o755, owner: str | None = None) -> None:
    """Create `path` (and parents) and set its mode and owner."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    uid, gid = owner_ids(owner)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)


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
