"""What a running command needs, built once from the config file: the validated
configuration, the database engine and session factory, and the secret box.

Nothing here is a module-level global: `open_runtime` builds it, `Runtime.close` ends it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from convodesk import config_file
from convodesk.domain.config_model import Problem, SystemConfig
from convodesk.services.live import LiveBus, LocalBus
from convodesk.services.live_pg import PgBus
from convodesk.storage import db, migrate
from convodesk.storage.crypto import SecretBox, load_secret_box

CONFIG_ENV = "CONVODESK_CONFIG"
DEFAULT_CONFIG = "convodesk.yaml"


class ConfigError(Exception):
    """The configuration file is missing or invalid; `problems` says where and why."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


def resolve_config_path(given: str | None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(given or env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def read_config(path: Path, environ: Mapping[str, str] | None = None) -> SystemConfig:
    config, problems = config_file.load_config(path, environ=environ)
    if config is None:
        raise ConfigError([p for p in problems if p.severity == "error"])
    return config


@dataclass
class Runtime:
    config: SystemConfig
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    # Live events for the agent desktops, published after commit: in-process on SQLite
    # (services/live.py), across processes with LISTEN/NOTIFY on PostgreSQL (live_pg.py).
    live: LiveBus = field(default_factory=LocalBus)

    def close(self) -> None:
        self.live.close()
        self.engine.dispose()


def open_runtime(
    config: SystemConfig, *, upgrade: bool = True, environ: Mapping[str, str] | None = None
) -> Runtime:
    engine = db.create_db_engine(config.database_url, sqlite_synchronous=config.sqlite_synchronous)
    if upgrade:
        migrate.upgrade(engine)
    return Runtime(
        config=config,
        engine=engine,
        sessions=db.make_session_factory(engine),
        box=load_secret_box(config.data_dir, environ),
        live=LocalBus() if db.is_sqlite(engine) else PgBus(engine),
    )
