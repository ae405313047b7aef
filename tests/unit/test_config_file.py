"""The config file edge: YAML parsing, ${VAR} substitution, file errors, load + validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from convodesk import config_file
from convodesk.domain import configurator
from convodesk.domain.config_model import Problem, SystemConfig
from convodesk.domain.secrets import EnvStr, Secret

FIXTURES = Path(__file__).parents[1] / "fixtures" / "configs"
APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"

SERVICE_YAML = f"""\
messaging_services:
  - name: sinch-eu
    service_connection: https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send
    authentication:
      - auth_id: KEY@{APP}
        password: ${{SINCH_KEY}}
      - auth_id: webhook
        password: ${{SINCH_HOOK}}
        triggers: [MESSAGE_INBOUND, MESSAGE_DELIVERY]
"""
ENV = {"SINCH_KEY": "key: with # odd 'chars\"", "SINCH_HOOK": "hook-secret"}


def messages(problems: tuple[Problem, ...]) -> list[str]:
    return [str(p) for p in problems]


# --------------------------------------------------------------------------- YAML


def test_a_mapping_loads_without_problems() -> None:
    loaded = config_file.load_text("database_url: sqlite:///x.db\nqueues: []\n")
    assert loaded.raw == {"database_url": "sqlite:///x.db", "queues": []}
    assert loaded.problems == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "queues:\n  - name: a\n    type: [chat\n",
            "invalid YAML at line 4, column 1: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 3, column 11)",
        ),
        ("a: 1\n b: 2\n", "invalid YAML at line 2, column 3: mapping values are not allowed here"),
        (
            "x: 'abc\n",
            "invalid YAML at line 2, column 1: found unexpected end of stream "
            "(while scanning a quoted scalar at line 1, column 4)",
        ),
        (
            "x: \t\x07\n",
            "invalid YAML at line 1, column 5: special characters are not allowed (#x7)",
        ),
        (
            "a: !!python/object:os.system x\n",
            "invalid YAML at line 1, column 4: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'",
        ),
    ],
)
def test_a_yaml_error_is_one_problem_with_line_and_column(text: str, message: str) -> None:
    loaded = config_file.load_text(text, source="c.yaml")
    assert loaded.raw is None
    assert messages(loaded.problems) == [f"c.yaml: {message}"]


def test_duplicate_keys_are_an_error_not_a_silent_overwrite() -> None:
    loaded = config_file.load_text("queues: []\nagents: []\nqueues:\n  - name: a\n")
    assert messages(loaded.problems) == [
        "<config>: invalid YAML at line 3, column 1: found duplicate key 'queues' "
        "(while constructing a mapping at line 1, column 1)"
    ]


def test_merge_keys_may_override_without_counting_as_duplicates() -> None:
    text = "base: &b {priority: 1, type: chat}\nq:\n  <<: *b\n  priority: 2\n"
    assert config_file.load_text(text).raw == {
        "base": {"priority": 1, "type": "chat"},
        "q": {"priority": 2, "type": "chat"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of settings at the top level, got a list"),
        ("42\n", "expected a mapping of settings at the top level, got a number"),
        ("just text\n", "expected a mapping of settings at the top level, got a string"),
        ("", "the file is empty: expected a mapping of settings"),
        ("# nothing but a comment\n", "the file is empty: expected a mapping of settings"),
    ],
)
def test_the_top_level_must_be_a_mapping(text: str, message: str) -> None:
    loaded = config_file.load_text(text)
    assert loaded.raw is None
    assert messages(loaded.problems) == [f"<config>: {message}"]


def test_too_deep_and_too_large_documents_are_refused() -> None:
    deep = config_file.load_text("x: " + "[" * 5000 + "]" * 5000)
    assert messages(deep.problems) == ["<config>: invalid YAML: nested too deeply"]
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, previous in zip("bcdef", "abcde", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    bomb = config_file.load_text("\n".join(lines))
    assert bomb.raw is None
    assert messages(bomb.problems) == [
        "<config>: too large: more than 100000 values after expanding aliases"
    ]


# --------------------------------------------------------------------------- ${VAR}


def test_a_whole_value_reference_becomes_an_env_str() -> None:
    loaded = config_file.load_text(SERVICE_YAML, environ=ENV)
    assert loaded.problems == ()
    assert loaded.raw is not None
    password = loaded.raw["messaging_services"][0]["authentication"][0]["password"]
    assert isinstance(password, EnvStr)
    assert password == ENV["SINCH_KEY"]
    assert password.env_var == "SINCH_KEY"


def test_references_inside_longer_strings_are_substituted() -> None:
    text = "database_url: postgresql://cc:${DB_PW}@${DB_HOST}/cc\n"
    loaded = config_file.load_text(text, environ={"DB_PW": "p@ss", "DB_HOST": "db"})
    assert loaded.raw == {"database_url": "postgresql://cc:p@ss@db/cc"}
    assert loaded.raw is not None
    assert not isinstance(loaded.raw["database_url"], EnvStr)


def test_double_dollar_escapes_a_literal_reference() -> None:
    text = "a: $${NOT_A_VAR}\nb: $ ${AMOUNT} or $$${AMOUNT}\nc: $5 and $${x\n"
    loaded = config_file.load_text(text, environ={"AMOUNT": "10"})
    assert loaded.problems == ()
    assert loaded.raw == {"a": "${NOT_A_VAR}", "b": "$ 10 or $${AMOUNT}", "c": "$5 and ${x"}


def test_references_are_substituted_in_nested_values_only() -> None:
    text = "${KEY}: ${V}\nlist:\n  - inner: ${V}\n  - 3\n  - true\n  - 2026-12-24\n"
    loaded = config_file.load_text(text, environ={"V": "v", "KEY": "k"})
    assert loaded.raw is not None
    assert loaded.raw["${KEY}"] == "v"
    assert loaded.raw["list"][0] == {"inner": "v"}
    assert loaded.raw["list"][1:3] == [3, True]
    assert str(loaded.raw["list"][3]) == "2026-12-24"


def test_an_unset_variable_names_the_variable_and_the_path() -> None:
    loaded = config_file.load_text(SERVICE_YAML, source="c.yaml", environ={"SINCH_HOOK": "h"})
    assert messages(loaded.problems) == [
        "messaging_services[0].authentication[0].password: environment variable SINCH_KEY "
        "is not set (referenced as ${SINCH_KEY})"
    ]
    # the rest is still there, so that validation can report everything else too
    assert loaded.raw is not None
    entry = loaded.raw["messaging_services"][0]["authentication"][0]
    assert entry["password"] == "${SINCH_KEY}"


def test_every_unset_variable_in_a_string_is_reported() -> None:
    loaded = config_file.load_text("database_url: postgresql://${USER}:${PW}@db/cc\n", environ={})
    assert messages(loaded.problems) == [
        "database_url: environment variable USER is not set (referenced as ${USER})",
        "database_url: environment variable PW is not set (referenced as ${PW})",
    ]
    assert loaded.raw == {"database_url": "postgresql://${USER}:${PW}@db/cc"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${1ABC}", "malformed ${...} reference"),
        ("${}", "malformed ${...} reference"),
        ("pre${A B}post", "malformed ${...} reference"),
        ("abc${DEF", "unclosed ${ reference"),
    ],
)
def test_malformed_references_are_errors_that_do_not_repeat_the_text(
    value: str, message: str
) -> None:
    loaded = config_file.load_text(yaml.safe_dump({"password": value}), environ={"A": "x"})
    assert messages(loaded.problems) == [
        f"password: {message}: expected ${{NAME}} with NAME of letters, digits and _ "
        "(write $${ for a literal ${)"
    ]
    assert "DEF" not in str(loaded.problems)
    assert "ABC" not in str(loaded.problems)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVODESK_TEST_VALUE", "from-os")
    assert config_file.load_text("a: ${CONVODESK_TEST_VALUE}\n").raw == {"a": "from-os"}


def test_an_empty_variable_substitutes_and_validation_reports_it() -> None:
    config, problems = load_config_text(SERVICE_YAML, {**ENV, "SINCH_HOOK": ""})
    assert config is None
    assert messages(problems) == [
        "messaging_services[0].authentication[1].password: must not be empty; expected the "
        "webhook secret token (Conversation API > Apps > app > Webhook)"
    ]


# --------------------------------------------------------------------------- files


def load_config_text(
    text: str, environ: dict[str, str], tmp: Path | None = None
) -> tuple[SystemConfig | None, tuple[Problem, ...]]:
    loaded = config_file.load_text(text, environ=environ)
    assert loaded.raw is not None
    validation = configurator.validate(loaded.raw)
    config = None if loaded.errors else validation.config
    return config, loaded.problems + validation.problems


def test_load_file_reads_utf8_with_or_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffdata_dir: dätä\n".encode())
    assert config_file.load_file(path).raw == {"data_dir": "dätä"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory, not a config file"),
        (
            lambda p: p.write_bytes(b"a: \xff\xfe\n"),
            "not UTF-8 text (byte 3): expected a YAML file",
        ),
    ],
)
def test_unreadable_files_are_problems_not_tracebacks(
    tmp_path: Path, make: Any, message: str
) -> None:
    path = tmp_path / "convodesk.yaml"
    make(path)
    loaded = config_file.load_file(path)
    assert loaded.raw is None
    assert messages(loaded.problems) == [f"{path}: {message}"]


def test_the_source_of_a_file_problem_is_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: [\n")
    [problem] = config_file.load_file(str(path)).problems
    assert problem.path == str(path)
    assert "line 2, column 1" in problem.message


def test_load_config_on_the_valid_fixture() -> None:
    config, problems = config_file.load_config(FIXTURES / "valid.yaml")
    assert problems == ()
    assert config is not None
    assert [q.name for q in config.queues] == [
        "whatsapp-support",
        "messenger-support",
        "sms-support",
    ]


def test_load_config_on_the_broken_fixture_reports_every_error() -> None:
    config, problems = config_file.load_config(FIXTURES / "broken.yaml")
    assert config is None
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 46
    assert len({p.path for p in errors}) == 46


def test_load_config_with_an_unset_variable_has_no_config_but_all_problems(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SERVICE_YAML + "agents:\n  - login: Anna\n    display_name: Anna\n")
    config, problems = config_file.load_config(path, environ={"SINCH_HOOK": "h"})
    assert config is None
    assert [p.path for p in problems] == [
        "messaging_services[0].authentication[0].password",
        "agents[0].login",
    ]


def test_load_config_passes_on_warnings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("public_base_url: http://cc.example.com\n")
    config, problems = config_file.load_config(path, environ={})
    assert config is not None
    assert messages(problems) == [
        "public_base_url: warning: not https: WhatsApp rich content (media) needs a public "
        "https:// URL"
    ]


def test_load_config_on_a_missing_file(tmp_path: Path) -> None:
    config, problems = config_file.load_config(tmp_path / "nope.yaml")
    assert config is None
    assert messages(problems) == [f"{tmp_path / 'nope.yaml'}: no such file"]


# --------------------------------------------------------------------------- export round trip


def test_a_placeholder_export_loads_back_with_the_variables_set() -> None:
    config, _ = config_file.load_config(FIXTURES / "valid.yaml")
    assert config is not None
    exported = yaml.safe_dump(configurator.dump(config, secrets="placeholder"), sort_keys=False)
    environ = {
        "CONVODESK_SINCH_EU_KEY_6F1D2C3B_4A59_4E8D_B7C6_A5F4E3D2C1B0_SECRET": (
            "example-eu-access-key-secret"
        ),
        "CONVODESK_SINCH_EU_WEBHOOK_SECRET": "example-eu-webhook-secret",
        "CONVODESK_SINCH_US_KEY_0A1B2C3D_4E5F_4A6B_8C7D_9E0F1A2B3C4D_SECRET": (
            "example-us-access-key-secret"
        ),
        "CONVODESK_SINCH_US_WEBHOOK_SECRET": "example-us-webhook-secret",
        "CONVODESK_AGENT_ADMIN_PASSWORD": "example-admin-password",
    }
    for value in environ.values():
        assert value not in exported
    loaded = config_file.load_text(exported, environ=environ)
    assert loaded.problems == ()
    assert loaded.raw is not None
    again = configurator.validate(loaded.raw).config
    assert again is not None
    eu = again.messaging_services[0]
    assert eu.outbound[0].secret == Secret(
        "example-eu-access-key-secret",
        env_var="CONVODESK_SINCH_EU_KEY_6F1D2C3B_4A59_4E8D_B7C6_A5F4E3D2C1B0_SECRET",
    )
    assert again.agents[0].password == Secret(
        "example-admin-password", env_var="CONVODESK_AGENT_ADMIN_PASSWORD"
    )
    # Without the variable names, the configuration is the same...
    assert configurator.dump(again, secrets="reveal") == configurator.dump(config, secrets="reveal")
    # ...and a second export writes the same references (they are remembered now).
    assert yaml.safe_dump(configurator.dump(again, secrets="placeholder"), sort_keys=False) == (
        exported
    )


def test_an_env_reference_survives_validate_and_dump() -> None:
    config, problems = load_config_text(SERVICE_YAML, ENV)
    assert problems == ()
    assert config is not None
    dumped = configurator.dump(config, secrets="placeholder")
    auth = dumped["messaging_services"][0]["authentication"]
    assert [a["password"] for a in auth] == ["${SINCH_KEY}", "${SINCH_HOOK}"]
    # the plain dump is YAML-safe: EnvStr values were turned into plain strings
    text = yaml.safe_dump(configurator.dump(config, secrets="reveal"))
    reloaded = yaml.safe_load(text)["messaging_services"][0]["authentication"][0]["password"]
    assert reloaded == ENV["SINCH_KEY"]
