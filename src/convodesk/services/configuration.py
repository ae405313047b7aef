"""Configuration use cases shared by the CLI (`config apply|export`) and the admin API.

Every change, whatever its source, goes the same way: the stored configuration is dumped to
the config-file shape, the change is made to that dict, `configurator.validate` checks the
whole result (so cross-resource rules, such as "a queue address's app must be an outbound
app of some service", hold after every change), and only then is it written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from sqlalchemy.orm import Session

from convodesk.domain import configurator
from convodesk.domain.config_model import Problem, SystemConfig
from convodesk.runtime import Runtime
from convodesk.services.errors import ConflictError, InvalidConfigError, NotFoundError
from convodesk.storage import config_store
from convodesk.storage.config_store import ApplyError, Change
from convodesk.storage.db import transaction

Section = Literal["messaging_services", "queues", "agents"]
KEY_FIELD: dict[str, str] = {"messaging_services": "name", "queues": "name", "agents": "login"}
SecretsMode = Literal["reveal", "placeholder", "mask"]


def stored_config(runtime: Runtime, session: Session) -> SystemConfig:
    return config_store.load(session, runtime.box, runtime.config)


def apply_validated(
    runtime: Runtime, config: SystemConfig, *, dry_run: bool = False
) -> list[Change]:
    """Write the sections a validated `config` names (its `present_sections`)."""
    with runtime.sessions() as session:
        session.begin()
        try:
            changes = config_store.apply(session, runtime.box, config)
        except ApplyError as exc:
            session.rollback()
            raise InvalidConfigError(exc.problems) from exc
        except BaseException:
            session.rollback()
            raise
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return changes


def apply_config(
    runtime: Runtime, raw: dict[str, Any], *, dry_run: bool = False
) -> tuple[list[Change], tuple[Problem, ...]]:
    """Write the sections `raw` (a config-file dict) names; with `dry_run`, report and roll
    back. The file is validated together with the stored sections it does not have, so a
    file with only `queues` is still checked against the stored messaging services.

    Returns the changes and the warnings; raises `InvalidConfigError` with every problem.
    """
    with runtime.sessions() as session:
        session.begin()
        try:
            validation = configurator.validate(raw, base=stored_config(runtime, session))
            if validation.config is None:
                raise InvalidConfigError(validation.errors)
            changes = config_store.apply(session, runtime.box, validation.config)
        except ApplyError as exc:
            session.rollback()
            raise InvalidConfigError(exc.problems) from exc
        except BaseException:
            session.rollback()
            raise
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return changes, validation.warnings


def export_config(runtime: Runtime, *, secrets: SecretsMode) -> dict[str, Any]:
    with transaction(runtime.sessions) as session:
        return configurator.dump(stored_config(runtime, session), secrets=secrets)


# --------------------------------------------------------------------------- admin API


def list_resources(runtime: Runtime, section: Section) -> list[dict[str, Any]]:
    exported = export_config(runtime, secrets="mask")
    return list(exported.get(section, []))


def get_resource(runtime: Runtime, section: Section, key: str) -> dict[str, Any]:
    for item in list_resources(runtime, section):
        if item.get(KEY_FIELD[section]) == key:
            return item
    raise NotFoundError(f"no {_singular(section)} named {key!r}")


def create_resource(runtime: Runtime, section: Section, body: dict[str, Any]) -> dict[str, Any]:
    key = body.get(KEY_FIELD[section])

    def change(raw: dict[str, Any]) -> int:
        items = raw.setdefault(section, [])
        if isinstance(key, str) and any(i.get(KEY_FIELD[section]) == key for i in items):
            raise ConflictError(f"a {_singular(section)} named {key!r} exists already")
        items.append(body)
        return len(items) - 1

    _mutate(runtime, section, change)
    return get_resource(runtime, section, str(key))


def replace_resource(
    runtime: Runtime, section: Section, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    field = KEY_FIELD[section]
    body = {field: key, **body}
    if body[field] != key:
        raise ConflictError(
            f"{field} in the body ({body[field]!r}) differs from the one in the path ({key!r}); "
            "renaming is not supported: create the new one and delete the old one"
        )

    def change(raw: dict[str, Any]) -> int:
        items = raw.get(section, [])
        index = _index_of(items, field, key, section)
        items[index] = body
        return index

    _mutate(runtime, section, change)
    return get_resource(runtime, section, key)


def delete_resource(runtime: Runtime, section: Section, key: str) -> None:
    field = KEY_FIELD[section]

    def change(raw: dict[str, Any]) -> None:
        items = raw.get(section, [])
        del items[_index_of(items, field, key, section)]
        if section == "queues":
            # Membership goes with the queue; everything else that names it is an error.
            for agent in raw.get("agents", []):
                agent["queues"] = [q for q in agent.get("queues", []) if q != key]

    _mutate(runtime, section, change, extra_sections=("agents",) if section == "queues" else ())


def get_chat_settings(runtime: Runtime) -> dict[str, Any]:
    return dict(export_config(runtime, secrets="mask").get("chat_settings", {}))


def replace_chat_settings(runtime: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    def change(raw: dict[str, Any]) -> None:
        raw["chat_settings"] = body

    _mutate(runtime, "chat_settings", change, problem_prefix="chat_settings")
    return get_chat_settings(runtime)


def _index_of(items: list[dict[str, Any]], field: str, key: str, section: str) -> int:
    for index, item in enumerate(items):
        if item.get(field) == key:
            return index
    raise NotFoundError(f"no {_singular(section)} named {key!r}")


def _singular(section: str) -> str:
    return {"messaging_services": "messaging service", "queues": "queue", "agents": "agent"}[
        section
    ]


def _mutate(
    runtime: Runtime,
    section: str,
    change: Any,
    *,
    extra_sections: tuple[str, ...] = (),
    problem_prefix: str | None = None,
) -> list[Change]:
    """Dump, change, validate the whole, write the touched sections; one transaction."""
    with transaction(runtime.sessions) as session:
        raw = configurator.dump(stored_config(runtime, session), secrets="reveal")
        index = change(raw)
        validation = configurator.validate(raw)
        if validation.config is None:
            prefix = problem_prefix or (f"{section}[{index}]" if index is not None else None)
            raise InvalidConfigError(_relative(validation.errors, prefix))
        touched = frozenset((section, *extra_sections))
        config = dataclasses.replace(validation.config, present_sections=touched)
        try:
            return config_store.apply(session, runtime.box, config)
        except ApplyError as exc:
            prefix = problem_prefix or (f"{section}[{index}]" if index is not None else None)
            raise InvalidConfigError(_relative(exc.problems, prefix)) from exc


def _relative(problems: list[Problem] | tuple[Problem, ...], prefix: str | None) -> list[Problem]:
    """Paths inside the submitted resource become relative to its body (``addresses[0]``);
    problems it causes elsewhere keep their full path (``queues[2].addresses[0]``)."""
    if prefix is None:
        return list(problems)
    out = []
    for p in problems:
        if p.path == prefix:
            out.append(dataclasses.replace(p, path=""))
        elif p.path.startswith(prefix + ".") or p.path.startswith(prefix + "["):
            out.append(dataclasses.replace(p, path=p.path[len(prefix) :].lstrip(".")))
        else:
            out.append(p)
    return out
