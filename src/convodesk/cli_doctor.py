"""`convodesk doctor`: check a configuration against the live (or emulated) Sinch API."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer


def doctor(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (default: $CONVODESK_CONFIG, then ./convodesk.yaml).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check the config file against Sinch: access keys, apps, channels and webhooks.

    Prints one line per finding (ok, warn, fail). Exits 0 when nothing failed (warnings
    allowed), 1 when something failed or the config file is invalid. Reads only the file and
    Sinch; the database is not opened. Secrets are compared, never printed.
    """
    from convodesk.cli import _config
    from convodesk.services import doctor as doctor_service

    findings = asyncio.run(doctor_service.diagnose(_config(config)))
    if as_json:
        typer.echo(
            json.dumps(
                [{"level": f.level, "subject": f.subject, "message": f.message} for f in findings],
                indent=2,
            )
        )
    else:
        for finding in findings:
            typer.echo(str(finding))
        failed = sum(1 for f in findings if f.level == "fail")
        warned = sum(1 for f in findings if f.level == "warn")
        typer.echo(f"{failed} failure(s), {warned} warning(s)", err=True)
    raise typer.Exit(doctor_service.exit_code(findings))
