"""git: the one module that runs it. Clone or fetch, resolve a ref, check it out.

Authentication is left to git's standard means (SSH agent, credential helpers), and
URLs carrying a password are refused, so no credential is ever written into the image's
.git/config. Prompts are disabled: a bake never hangs waiting for a password.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import AgentError, BadInput

_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:(?!//)")  # [user@]host:path, git's scp-like syntax


def resolve_url(url: str, base: Path) -> str:
    """Local paths are taken relative to services.yaml's folder; URLs pass through.

    HTTP(S) URLs may not carry any user info: `https://TOKEN@host/...` is how access
    tokens are usually pasted, and it would be written into the image's .git/config
    and manifest. (ssh://git@host is a login name, not a credential.)
    """
    if "://" in url:
        parts = urlsplit(url)
        if parts.password or (parts.username and parts.scheme in ("http", "https")):
            raise BadInput(f"repo url {parts.scheme}://{parts.hostname}/... carries credentials; "
                           "use an SSH key or a git credential helper instead")
        return url
    if _SCP_LIKE.match(url) and not url.startswith(("/", ".")):
        return url
    return str((base / url).resolve())


def _git(args: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise AgentError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()[-400:]}")
    return result.stdout.strip()


def clone_or_fetch(url: str, dest: Path) -> str:
    """'fetched' when a checkout was already there (a re-bake), else 'cloned'."""
    if (dest / ".git").is_dir():
        _git(["remote", "set-url", "origin", url], cwd=dest)
        _git(["fetch", "--quiet", "--prune", "--tags", "--force", "origin"], cwd=dest)
        return "fetched"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(["clone", "--quiet", "--no-checkout", url, str(dest)])
    return "cloned"


def origin_url(dest: Path) -> str:
    """The URL the checkout at `dest` was cloned from, as written (no insteadOf rewriting)."""
    return _git(["config", "--get", "remote.origin.url"], cwd=dest)


def checkout(dest: Path, ref: str) -> str:
    """Check out `ref` (branch, tag or commit) detached; return the commit SHA."""
    for candidate in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
        try:
            sha = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd=dest)
        except AgentError:
            continue
        _git(["checkout", "--quiet", "--force", "--detach", sha], cwd=dest)
        return sha
    raise AgentError(f"ref {ref!r} not found in {dest} (not a branch, tag or commit of its origin)")
