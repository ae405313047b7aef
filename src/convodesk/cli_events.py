"""`convodesk events ...`: browse, replay and clean up the event log from the shell.

Thin, like `cli.py`: parse, call `services.event_log`, print. The runtime helper comes from
`convodesk.cli` at call time (cli.py imports this module to register it, so importing cli
here at module level would be a cycle).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convodesk.storage.event_log import MAX_EVENT_ID, EventFilters, Outcome, State

if TYPE_CHECKING:
    from convodesk.runtime import Runtime
    from convodesk.services.event_log import EventItem

events_app = typer.Typer(
    help="Browse, replay and clean up the event log (every callback received).",
    no_args_is_help=True,
)

# The same option as cli.ConfigOption; declared here because Typer reads it when the
# command is defined, before cli.py (which imports this module) has finished loading.
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $CONVODESK_CONFIG, then ./convodesk.yaml).",
        show_default=False,
    ),
]
ServiceOption = Annotated[str | None, typer.Option(help="Messaging service name.")]
TriggerOption = Annotated[str | None, typer.Option(help="Trigger, e.g. MESSAGE_INBOUND.")]
StateOption = Annotated[State | None, typer.Option(help="Processing state.")]
AppOption = Annotated[str | None, typer.Option("--app", help="Sinch app id.")]
IdentityOption = Annotated[str | None, typer.Option(help="The customer's channel identity.")]
SinceOption = Annotated[
    str | None, typer.Option(help="Received at or after (ISO-8601; no offset: UTC).")
]
UntilOption = Annotated[
    str | None, typer.Option(help="Received before (ISO-8601; no offset: UTC).")
]

TABLE_COLUMNS = ("id", "received_at", "service", "trigger", "outcome", "state", "identity")
REASON_WIDTH = 70
PAGE = 500


def _open(config: str | None) -> Runtime:
    from convodesk.cli import _runtime

    return _runtime(config)


def _instant(value: str | None, option: str) -> datetime | None:
    from convodesk.services.event_log import parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 date or date-time", param_hint=option
        ) from exc


def _check_ids(values: list[int], option: str) -> None:
    for value in values:
        if not 1 <= value <= MAX_EVENT_ID:
            raise typer.BadParameter(f"{value} is not an event id", param_hint=option)


@events_app.command("list")
def events_list(
    service: ServiceOption = None,
    trigger: TriggerOption = None,
    outcome: Annotated[Outcome | None, typer.Option(help="What the intake did with it.")] = None,
    state: StateOption = None,
    app_id: AppOption = None,
    identity: IdentityOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 50,
    before: Annotated[int | None, typer.Option(help="Only ids below this one.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, body included.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """List events, newest first: a table, or JSON lines with --json."""
    from convodesk.services import event_log

    if before is not None:
        _check_ids([before], "--before")
    filters = EventFilters(
        service=service,
        trigger=trigger,
        outcome=outcome,
        state=state,
        app_id=app_id,
        identity=identity,
        since=_instant(since, "--since"),
        until=_instant(until, "--until"),
    )
    runtime = _open(config)
    items: list[EventItem] = []
    try:
        cursor = before
        while len(items) < limit:
            page = event_log.list_events(
                runtime, filters, limit=min(PAGE, limit - len(items)), before=cursor
            )
            items.extend(page.items)
            if page.next is None:
                break
            cursor = page.next
    finally:
        runtime.close()
    if as_json:
        for item in items:
            typer.echo(json.dumps(_jsonable(item), ensure_ascii=False))
        return
    _print_table(items)


def _jsonable(item: EventItem) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def _print_table(items: list[EventItem]) -> None:
    if not items:
        typer.echo("no events", err=True)
        return
    rows = [
        [_cell(getattr(item, column)) for column in TABLE_COLUMNS]
        + [_reason(item.reason, item.state_reason)]
        for item in items
    ]
    header = [*TABLE_COLUMNS, "reason"]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    for line in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        typer.echo("  ".join([*cells, line[-1]]).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _reason(reason: str | None, state_reason: str | None) -> str:
    text = "; ".join(r for r in (reason, state_reason) if r)
    text = " ".join(text.split())  # one line per event
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


@events_app.command("replay")
def events_replay(
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="An event id; repeat for more.")
    ] = None,
    service: ServiceOption = None,
    trigger: TriggerOption = None,
    state: StateOption = None,
    app_id: AppOption = None,
    identity: IdentityOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Put accepted events back to pending so the Chain Matcher processes them again.

    Select them by --id, or by filters; with neither, nothing is replayed (exit 2).
    Processing is idempotent: replaying an event that was handled already is safe.
    """
    from convodesk.services import event_log

    filters = EventFilters(
        service=service,
        trigger=trigger,
        state=state,
        app_id=app_id,
        identity=identity,
        since=_instant(since, "--since"),
        until=_instant(until, "--until"),
    )
    _check_ids(ids or [], "--id")
    if not ids and filters.is_empty():
        raise typer.BadParameter(
            "give --id or at least one filter; an empty selection would replay every event",
            param_hint="--id",
        )
    if ids and not filters.is_empty():
        raise typer.BadParameter("give either --id or filters, not both", param_hint="--id")
    runtime = _open(config)
    try:
        count = event_log.replay_events(runtime, ids or filters)
    finally:
        runtime.close()
    typer.echo(f"{count} event(s) marked pending for replay")


@events_app.command("cleanup")
def events_cleanup(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Delete events older than this (default: chat_settings.event_retention_days).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Delete old events, in batches; events still pending are kept."""
    from convodesk.services import event_log

    runtime = _open(config)
    try:
        result = event_log.cleanup_events(runtime, older_than_days=older_than_days)
    finally:
        runtime.close()
    typer.echo(
        f"deleted {result.deleted} event(s) received before "
        f"{result.cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')} (older than {result.older_than_days} days)"
    )
