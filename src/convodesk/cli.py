"""The `convodesk` command line (Typer). Thin: parse, call a service, print.

Exit codes: 0 success, 1 invalid input (a bad config file, an unknown agent, ...), 2 usage
error (unknown option, missing argument: Click's own code).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
import yaml

from convodesk import cli_doctor, config_file
from convodesk.cli_events import events_app
from convodesk.cli_outbox import outbox_app
from convodesk.domain.config_model import Problem, SystemConfig
from convodesk.runtime import ConfigError, Runtime, open_runtime, read_config, resolve_config_path

app = typer.Typer(
    name="convodesk",
    help="Contact-center messaging for the Sinch Conversation API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate, apply and export the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(events_app, name="events")
app.add_typer(outbox_app, name="outbox")

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $CONVODESK_CONFIG, then ./convodesk.yaml).",
        show_default=False,
    ),
]


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _print_problems(problems: tuple[Problem, ...] | list[Problem]) -> None:
    for problem in problems:
        stream = sys.stdout if problem.severity == "error" else sys.stderr
        print(problem, file=stream)


def _config(path_option: str | None) -> SystemConfig:
    path = resolve_config_path(path_option)
    try:
        return read_config(path)
    except ConfigError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from exc


def _runtime(path_option: str | None, *, upgrade: bool = True) -> Runtime:
    return open_runtime(_config(path_option), upgrade=upgrade)


# --------------------------------------------------------------------------- config


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The config file to check.")],
) -> None:
    """Check FILE against every rule; print each problem as `path: message`.

    Exits 1 when there is an error; warnings alone exit 0.
    """
    config, problems = config_file.load_config(file)
    _print_problems(problems)
    if config is None:
        raise typer.Exit(1)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    typer.echo(f"{file}: valid" + (f" ({warnings} warning(s))" if warnings else ""), err=True)


@config_app.command("apply")
def config_apply(
    file: Annotated[Path, typer.Argument(help="The config file to apply.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, change nothing.")] = False,
) -> None:
    """Make the stored configuration match FILE, section by section; report what changed.

    Only the sections present in FILE (messaging_services, queues, chat_settings, agents) are
    touched. Applying the same file twice changes nothing the second time.
    """
    from convodesk.services import configuration
    from convodesk.services.errors import InvalidConfigError

    config = _config(str(file))
    raw = config_file.load_file(file).raw or {}
    runtime = open_runtime(config)
    try:
        changes, warnings = configuration.apply_config(runtime, raw, dry_run=dry_run)
    except InvalidConfigError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    _print_problems(warnings)
    for change in changes:
        typer.echo(str(change))
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{len(changes)} {verb}" if changes else "no changes")


@config_app.command("export")
def config_export(
    config: ConfigOption = None,
    secrets: Annotated[
        str,
        typer.Option(
            help="placeholder: write ${VAR} references; mask: write ********.",
            case_sensitive=False,
        ),
    ] = "placeholder",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print the stored configuration as YAML; secrets are never written in plain text."""
    from convodesk.services import configuration

    mode = secrets.lower()
    if mode not in ("placeholder", "mask"):
        raise typer.BadParameter("expected placeholder or mask", param_hint="--secrets")
    runtime = _runtime(config)
    try:
        data = configuration.export_config(runtime, secrets=_secrets_mode(mode))
    finally:
        runtime.close()
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        os.chmod(output, 0o600)


def _secrets_mode(mode: str) -> Literal["placeholder", "mask"]:
    return "mask" if mode == "mask" else "placeholder"


# --------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Bring the database schema up to date (safe to run on several nodes at once)."""
    from convodesk.storage import migrate

    runtime = _runtime(config, upgrade=False)
    try:
        before = migrate.current_revision(runtime.engine)
        migrate.upgrade(runtime.engine)
        after = migrate.current_revision(runtime.engine)
    finally:
        runtime.close()
    typer.echo(f"database at {after}" + (" (unchanged)" if before == after else f" (was {before})"))


# --------------------------------------------------------------------------- token


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin or agent.")],
    agent: Annotated[
        str | None, typer.Option(help="The agent's login (required for role agent).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="A note to recognise it by.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an API token and print it, alone, on the last line (shown only this once)."""
    from convodesk.storage import api_tokens
    from convodesk.storage.db import transaction

    if role not in ("admin", "agent"):
        raise typer.BadParameter("expected admin or agent", param_hint="--role")
    if role == "agent" and not agent:
        raise typer.BadParameter("an agent token needs --agent LOGIN", param_hint="--agent")
    runtime = _runtime(config)
    try:
        with transaction(runtime.sessions) as session:
            token = api_tokens.create_token(
                session, role=role, agent_login=agent, description=description
            )
    except api_tokens.UnknownAgentError:
        _fail(f"--agent: no agent with login {agent!r}")
    finally:
        runtime.close()
    typer.echo(f"{role} token" + (f" for {agent}" if agent else "") + ":", err=True)
    typer.echo(token)


# --------------------------------------------------------------------------- processes


@app.command("serve")
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    intake_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Also serve the Sinch callbacks from a second process on this port "
            "(for high callback rates: docs/operations/sizing.md).",
        ),
    ] = None,
) -> None:
    """Run the web app (callbacks, API, desktop) and the workers in one process.

    With --intake-port, the callbacks are also served by a child process on that port,
    which takes the intake's work off this process.
    """
    from convodesk.server import run_server

    runtime = _runtime(config)
    run_server(runtime, host=host, port=port, intake_port=intake_port)


@app.command("worker")
def worker(
    config: ConfigOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (default: none)."
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run the background workers alone (processor, sender, media, housekeeping), no HTTP.

    For multi-node deployments on PostgreSQL: any number of `worker` processes beside the
    `serve` nodes. SIGTERM lets started sends finish, then exits.
    """
    from convodesk.workers.runner import run_workers

    run_workers(_runtime(config), metrics_host=metrics_host, metrics_port=metrics_port)


app.command("doctor")(cli_doctor.doctor)


@app.command("emulator")
def emulator(
    config: Annotated[str, typer.Option("--config", "-c", help="The emulator's YAML config.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Run the Sinch Conversation API emulator alone (docs/emulator.md)."""
    from convodesk.emulator.server import serve_forever

    if not Path(config).is_file():
        _fail(f"--config: no such file: {config}")
    serve_forever(config, host, port)


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option(help="Port of the web app.")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where to keep the data (default ./data).")
    ] = None,
    customers: Annotated[
        bool,
        typer.Option(
            "--customers/--no-customers",
            help="Simulated customers writing in on WhatsApp, Messenger and SMS.",
        ),
    ] = True,
    customer_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=86400.0,
            metavar="SECONDS",
            help="Seconds between new simulated customers, on average.",
        ),
    ] = 30.0,
) -> None:
    """Everything on one machine, no account needed: SQLite, the Sinch emulator, a sample
    configuration and simulated customers. Prints the URL and the logins."""
    from convodesk.demo import run_demo

    run_demo(
        port=port,
        data_dir=data_dir or Path("data"),
        customers=customers,
        customer_interval=customer_interval,
    )


def main() -> None:
    app()
