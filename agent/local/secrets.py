"""Generated secrets of this box: local database passwords, the environment digest key.

Made once and kept 0600 under a 0700 directory, so a reboot reuses them (a new
PostgreSQL password on every boot would lock the services out of their data).
"""

from __future__ import annotations

import secrets as _random

from agent.local import fs
from agent.local.layout import Layout


def secret(layout: Layout, name: str) -> str:
    """The secret called `name`, made on first use."""
    fs.ensure_dir(layout.secrets_dir, 0o700)
    path = layout.secrets_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = _random.token_hex(16)
        fs.write(fs.FileSpec(path, value + "\n", 0o600))
        return value
