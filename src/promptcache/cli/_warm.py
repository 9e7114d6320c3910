"""``promptcache serve --warm FILE``: named prefixes prefilled and pinned before the server
listens (what vLLM users ask for as pinning prefixes at start-up).

The file is JSON lines: each line one prefix, in the shape of a ``POST
/v1/cache/prefixes`` body (either dialect's; ``ttl``, ``name`` and ``format`` as
there), plus an optional ``"api_key"``: the prefix is pinned for the tenant of
that key, which must be one of the server's keys. Without it the prefix goes to
the default tenant -- which only exists on a server without keys, so on a server
with keys a line without ``api_key`` is an error (nobody could read its prefix).
Blank lines are skipped.

Every line is read and checked before any prefill, and the server refuses to
start on the first bad line, naming the file and line number -- a server that
came up without the prefixes it was told to hold would look warm and be cold.
A prefix that cannot be pinned (the pin cap, too short) stops the start the same
way. The key itself is never printed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from promptcache.engine.base import Engine
from promptcache.errors import PromptCacheError
from promptcache.result import PinnedPrefix
from promptcache.server.auth import KeyRing
from promptcache.server.models import ModelCatalog
from promptcache.server.routes_prefixes import PrefixSpec, choose_dialect, parse_prefix_body, pin

API_KEY_MEMBER = "api_key"


class WarmFileError(ValueError):
    """A ``--warm`` line that cannot be pinned: ``FILE:LINE: why``."""


@dataclass(frozen=True, kw_only=True)
class WarmLine:
    number: int
    spec: PrefixSpec


def read_warm_file(path: Path, *, keyring: KeyRing, catalog: ModelCatalog) -> list[WarmLine]:
    """Every prefix of ``path``, checked; WarmFileError names the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WarmFileError(f"--warm {path}: cannot be read ({exc})") from None
    lines: list[WarmLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"--warm {path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WarmFileError(
                f"{where}: not a JSON object ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(data, dict):
            raise WarmFileError(f"{where}: not a JSON object")
        tenant = _tenant(data.pop(API_KEY_MEMBER, None), keyring, where)
        try:
            spec = parse_prefix_body(
                data, tenant=tenant, catalog=catalog, dialect=choose_dialect(data, {})
            )
        except PromptCacheError as error:
            raise WarmFileError(f"{where}: {error.message}") from None
        lines.append(WarmLine(number=number, spec=spec))
    return lines


def _tenant(api_key: object, keyring: KeyRing, where: str) -> str:
    if api_key is None:
        if keyring.required:
            raise WarmFileError(
                f"{where}: this server has API keys, so each line needs an "
                f'"{API_KEY_MEMBER}" naming the tenant to pin the prefix for'
            )
        return ""
    if not isinstance(api_key, str) or not api_key.strip():
        raise WarmFileError(f'{where}: "{API_KEY_MEMBER}" must be a non-empty string')
    if not keyring.required:
        raise WarmFileError(
            f'{where}: "{API_KEY_MEMBER}" names a tenant, but this server has no API keys '
            "(--api-key); drop it to pin for the default tenant"
        )
    try:
        return keyring.tenant({"x-api-key": api_key})
    except PromptCacheError:
        raise WarmFileError(
            f'{where}: "{API_KEY_MEMBER}" is not one of this server\'s keys (--api-key)'
        ) from None


async def warm_prefixes(
    engine: Engine, path: Path, lines: Sequence[WarmLine], console: Console
) -> list[PinnedPrefix]:
    """Prefill and pin ``lines`` in order, a progress bar on ``console``."""
    pinned: list[PinnedPrefix] = []
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(f"Pinning prefixes from {path.name}", total=len(lines))
        for line in lines:
            try:
                prefix = await pin(engine, line.spec, timeout=None)
            except PromptCacheError as error:
                raise WarmFileError(f"--warm {path}:{line.number}: {error.message}") from None
            pinned.append(prefix)
            bar.advance(task)
    return pinned
