"""The Typer application every command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="promptcache",
    help="Exact response cache and KV prefix cache for chat-model calls.",
    no_args_is_help=True,
    add_completion=False,
)
