"""`convodesk outbox ...`: see the replies that could not be sent, and queue them again."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from convodesk.cli_events import ConfigOption, _open

outbox_app = typer.Typer(
    help="Agent replies waiting, failed or given up (dead letters).", no_args_is_help=True
)


@outbox_app.command("list")
def outbox_list(
    state: Annotated[
        list[str] | None,
        typer.Option(
            help="pending, sending, done, failed, dead (repeatable; default failed+dead)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """List outbox entries, newest first."""
    from convodesk.services import outbox
    from convodesk.services.errors import InvalidRequestError

    runtime = _open(config)
    try:
        entries = outbox.list_entries(runtime, tuple(state or ("dead", "failed")), limit)
    except InvalidRequestError as exc:
        for problem in exc.problems:
            typer.echo(f"--state: {problem.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        runtime.close()
    for entry in entries:
        if as_json:
            typer.echo(json.dumps(entry, default=str))
        else:
            error = (entry["last_error"] or "")[:70]
            typer.echo(
                f"{entry['id']:>6} msg {entry['message_id']:>6} {entry['state']:<8} "
                f"attempts {entry['attempts']:>2}  {error}"
            )
    if not as_json:
        typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", err=True)


@outbox_app.command("retry")
def outbox_retry(
    ids: Annotated[list[int] | None, typer.Option("--id", help="Outbox id (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead or failed entry.")] = False,
    config: ConfigOption = None,
) -> None:
    """Queue dead or failed replies again (their attempts start from zero)."""
    from convodesk.services import outbox

    if bool(ids) == all_:
        raise typer.BadParameter("give --id N (repeatable) or --all", param_hint="--id/--all")
    runtime = _open(config)
    try:
        count = outbox.retry_entries(runtime, {"all": True} if all_ else {"ids": ids})
    finally:
        runtime.close()
    typer.echo(f"{count} queued again")
