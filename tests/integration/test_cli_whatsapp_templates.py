"""`config validate|apply|export` with WhatsApp templates, as real subprocesses, on SQLite and
PostgreSQL: the export applies back as "no changes", a bad template is named by its path."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.integration.test_cli import run, write_config
from tests.support.apps import APP_EU

TEMPLATES = [
    {
        "app_id": APP_EU,
        "name": "order_update",
        "language": "sv_SE",
        "parameters": ["body[1]text", "body[2]text"],
        "text": "Hej {body[1]text}! Order {body[2]text} har skickats.",
    },
    {"app_id": APP_EU, "name": "hello", "language": "en", "parameters": []},
]


def config_with_templates(path: Path, database_url: str, data_dir: Path) -> Path:
    write_config(path, database_url, data_dir)
    data = yaml.safe_load(path.read_text())
    data["messaging_services"][0]["whatsapp_templates"] = TEMPLATES
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_templates_survive_export_and_apply(database_url: str, tmp_path: Path) -> None:
    path = config_with_templates(tmp_path / "c.yaml", database_url, tmp_path / "data")
    first = run("config", "apply", str(path))
    assert first.returncode == 0, first.stdout + first.stderr

    exported = run("config", "export", "--config", str(path))
    assert exported.returncode == 0, exported.stderr
    assert yaml.safe_load(exported.stdout)["messaging_services"][0]["whatsapp_templates"] == [
        TEMPLATES[0],
        TEMPLATES[1],
    ]
    again = tmp_path / "export.yaml"
    again.write_text(exported.stdout)
    assert run("config", "apply", str(again)).stdout.strip() == "no changes"

    data = yaml.safe_load(path.read_text())
    data["messaging_services"][0]["whatsapp_templates"].pop()
    path.write_text(yaml.safe_dump(data))
    changed = run("config", "apply", str(path))
    assert "changed messaging_services: sinch-eu (whatsapp_templates)" in changed.stdout


def test_validate_names_a_bad_template_and_the_fix(tmp_path: Path) -> None:
    path = config_with_templates(tmp_path / "c.yaml", "sqlite:///x.db", tmp_path)
    data = yaml.safe_load(path.read_text())
    data["messaging_services"][0]["whatsapp_templates"][1]["language"] = "en-US"
    path.write_text(yaml.safe_dump(data))
    result = run("config", "validate", str(path))
    assert result.returncode == 1
    assert (
        "messaging_services[0].whatsapp_templates[1].language: WhatsApp writes language codes "
        "with an underscore and an upper-case country: use en_US"
    ) in result.stdout + result.stderr
