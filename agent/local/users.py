"""OS users: who programs run as, and switching to them properly."""

from __future__ import annotations

import os
import pwd


def system_user(name: str) -> str | None:
    """`name` when the agent is root and that user exists; else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name


def home_of(user: str | None) -> str:
    """The home directory of `user` (None: the agent's own user)."""
    try:
        entry = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    except KeyError:
        return "/"
    return entry.pw_dir


def run_as(user: str | None) -> dict[str, object]:
    """subprocess arguments that switch to `user` fully: Python's `user=` alone keeps
    the root group and root's supplementary groups."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(user, entry.pw_gid)}
