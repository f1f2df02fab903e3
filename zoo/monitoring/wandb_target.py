"""Where a run's W&B records go: the mode and project from the recipe and W&B's own environment
variables, and the switch to offline when the server does not answer.

The environment wins where it turns W&B down, and the recipe wins where it says something itself:

* ``WANDB_DISABLED=true`` or ``WANDB_MODE=disabled``: no W&B at all, whatever the recipe says;
  ``WANDB_MODE=offline`` (or ``dryrun``): offline, whatever the recipe says (a machine without network).
* ``logger.wandb.mode`` online, offline or disabled: that mode. ``auto`` (the default): ``WANDB_MODE``
  when it is set (``online``), else online when an API key is configured and offline otherwise.
* Online needs an API key: without one the run logs offline and says so in one line.
* ``logger.wandb.project`` null (the default): ``WANDB_PROJECT``, else ``zoo``. ``entity``, ``tags``
  null or empty: wandb reads ``WANDB_ENTITY`` and ``WANDB_TAGS`` itself.

Online, ``wandb.init`` waits ``WANDB_INIT_TIMEOUT`` seconds (15 unless set) for the server; when it does
not answer (no network, a firewall, a wrong ``WANDB_BASE_URL``) the run logs offline instead, with one
warning line saying how to upload it later, rather than stopping the run after wandb's 90 s.
"""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_HOST = "https://api.wandb.ai"
DEFAULT_PROJECT = "zoo"
INIT_TIMEOUT = 15.0  # seconds; W&B's own default (90) would hold a run that long when there is no network
_TRUE = ("true", "1", "yes", "on")
_said: set[str] = set()  # warnings already printed in this process (an ensemble starts several runs)


def api_key_configured() -> bool:
    """Whether W&B has credentials here: WANDB_API_KEY, or a netrc entry for its host. No network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or "api.wandb.ai"
    candidates = [os.environ.get("NETRC")] if os.environ.get("NETRC") else []
    candidates += [str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]
    for file in candidates:
        if file and Path(file).is_file():
            try:
                auth = netrc.netrc(file).authenticators(host)
            except (netrc.NetrcParseError, OSError):
                continue
            if auth and auth[2]:
                return True
    return False


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(f"zoo: warning: {text}", file=sys.stderr, flush=True)


def resolve_mode(mode: str) -> str:
    """online, offline or disabled, from the recipe's ``mode`` and the environment (see the module's doc)."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "off") or os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled"
    if env in ("offline", "dryrun"):
        return "offline"
    if mode == "auto":
        if env != "online":
            return "online" if api_key_configured() else "offline"
        mode = "online"
    if mode == "online" and not api_key_configured():
        asked = "WANDB_MODE=online" if env == "online" else "logger.wandb.mode=online"
        _say_once(f"{asked}, but no W&B API key is configured (wandb login, or WANDB_API_KEY): logging offline")
        return "offline"
    return mode


def project(recipe_project: str | None) -> str:
    """The W&B project: the recipe's, else WANDB_PROJECT, else zoo's."""
    return recipe_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def init_timeout() -> float:
    """Seconds ``wandb.init`` waits for the server: WANDB_INIT_TIMEOUT, else :data:`INIT_TIMEOUT`."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT))
    except ValueError:
        return INIT_TIMEOUT


def init_or_offline(init: Callable[[str], Any], mode: str, wandb_dir: Path) -> tuple[Any, str]:
    """``init(mode)`` (which calls wandb.init); online, a server that does not answer within
    :func:`init_timeout` makes it ``init("offline")`` instead, after one warning line. (run, mode).

    The folder the failed attempt began in ``wandb_dir`` goes: ``wandb sync`` would otherwise upload a run the
    server never created, beside the offline one."""
    import shutil

    from wandb.errors import CommError

    before = set(wandb_dir.glob("run-*"))
    try:
        return init(mode), mode
    except CommError as exc:
        if mode != "online":
            raise
        for folder in set(wandb_dir.glob("run-*")) - before:
            shutil.rmtree(folder, ignore_errors=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _say_once(
            f"the W&B server did not answer within {init_timeout():g} s ({reason}); logging offline instead "
            f"(upload later with: wandb sync {wandb_dir}; WANDB_INIT_TIMEOUT sets the wait)"
        )
        return init("offline"), "offline"
