"""The config file: YAML in, a config-file shaped dict (or problems) out.

This is the I/O edge of the configuration; the rules live in `domain.configurator`.

- YAML is read with a safe loader that also refuses duplicate keys (PyYAML would keep the
  last one silently). A syntax error becomes one problem naming the line and column.
- ``${VAR}`` references are substituted from the environment after parsing, in every string
  value, also inside longer strings (``postgresql://u:${PW}@db/cc``); ``$${`` writes a
  literal ``${``. A value that is exactly ``${VAR}`` becomes an `EnvStr` that remembers the
  variable, so `config export` can write the same reference back. Substituting after parsing
  means a secret can hold any character (``: ``, ``#``, quotes) without breaking the YAML.
- An unset variable is a problem naming the variable and the path where it is used; the
  reference is then left as it is, so that the other rules still run and report everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from typing_extensions import override

from convodesk.domain import configurator
from convodesk.domain.config_model import Problem, SystemConfig
from convodesk.domain.secrets import EnvStr

DEFAULT_SOURCE = "<config>"
MAX_NODES = 100_000  # after alias expansion: a "billion laughs" document stops here

# `$${` (an escaped `${`) or `${...}`, with or without its closing brace.
REFERENCE_RE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<close>\}?)")
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class LoadResult:
    """The parsed file and what went wrong reading it.

    `raw` is None when the file could not be read or parsed. It is set even when there are
    problems with ``${VAR}`` references (left unsubstituted), so that validation can report
    every other problem too: check `problems` before using `raw`.
    """

    raw: dict[str, Any] | None
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> tuple[SystemConfig | None, tuple[Problem, ...]]:
    """Read, substitute and validate a config file. The config is None on any error."""
    loaded = load_file(path, environ=environ)
    if loaded.raw is None:
        return None, loaded.problems
    validation = configurator.validate(loaded.raw)
    problems = loaded.problems + validation.problems
    return (None if loaded.errors else validation.config), problems


def load_file(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> LoadResult:
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return _failed(source, "no such file")
    except IsADirectoryError:
        return _failed(source, "is a directory, not a config file")
    except UnicodeDecodeError as exc:
        return _failed(source, f"not UTF-8 text (byte {exc.start}): expected a YAML file")
    except OSError as exc:
        return _failed(source, f"cannot read the file: {exc.strerror or exc}")
    return load_text(text, source=source, environ=environ)


def load_text(
    text: str, *, source: str = DEFAULT_SOURCE, environ: Mapping[str, str] | None = None
) -> LoadResult:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        return _failed(source, _yaml_message(exc, text))
    except RecursionError:
        return _failed(source, "invalid YAML: nested too deeply")
    if document is None:
        return _failed(source, "the file is empty: expected a mapping of settings")
    if not isinstance(document, dict):
        return _failed(
            source, f"expected a mapping of settings at the top level, got {_kind(document)}"
        )
    substitution = _Substitution(os.environ if environ is None else environ)
    raw = substitution.mapping(document, "")
    if substitution.too_large:
        return _failed(source, f"too large: more than {MAX_NODES} values after expanding aliases")
    return LoadResult(raw=raw, problems=tuple(substitution.problems))


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _failed(source: str, message: str) -> LoadResult:
    return LoadResult(raw=None, problems=(Problem(path=source, message=message),))


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys in a mapping."""

    @override
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_message(exc: yaml.YAMLError, text: str) -> str:
    """``invalid YAML at line L, column C: problem (context)``, 1-based like editors."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or "syntax error"
        context = ""
        if exc.context and exc.context_mark is not None:
            context_mark = exc.context_mark
            context = (
                f" ({exc.context} at line {context_mark.line + 1}, "
                f"column {context_mark.column + 1})"
            )
        elif exc.context:
            context = f" ({exc.context})"
        return f"invalid YAML at {where}: {problem}{context}"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return f"invalid YAML at line {line}, column {column}: {exc.reason} (#x{exc.character:x})"
    return f"invalid YAML: {exc}"


# --------------------------------------------------------------------------- ${VAR}


class _Substitution:
    """Copies the parsed document, substituting ``${VAR}`` in string values."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[Problem] = []
        self.nodes = 0
        self.too_large = False

    def mapping(self, data: Mapping[Any, Any], path: str) -> dict[Any, Any]:
        return {key: self.value(value, _key(path, key)) for key, value in data.items()}

    def value(self, value: Any, path: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.too_large = True
            return None
        if isinstance(value, str):
            return self.string(value, path)
        if isinstance(value, Mapping):
            return self.mapping(value, path)
        if isinstance(value, list):
            return [self.value(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return value

    def string(self, text: str, path: str) -> str:
        if "${" not in text:
            return text
        whole = re.fullmatch(r"\$\{(" + VARIABLE_RE.pattern + r")\}", text)
        if whole:
            found = self.lookup(whole.group(1), path)
            return text if found is None else EnvStr(found, whole.group(1))
        unresolved = False

        def replace(match: re.Match[str]) -> str:
            nonlocal unresolved
            if match.group(0) == "$${":
                return "${"
            body = match.group("body")
            if not match.group("close") or not VARIABLE_RE.fullmatch(body):
                unresolved = True
                self.problems.append(Problem(path=path, message=_malformed(match.group(0))))
                return match.group(0)
            found = self.lookup(body, path)
            unresolved = unresolved or found is None
            return match.group(0) if found is None else found

        substituted = REFERENCE_RE.sub(replace, text)
        return text if unresolved else substituted

    def lookup(self, name: str, path: str) -> str | None:
        found = self.environ.get(name)
        if found is None:
            self.problems.append(
                Problem(
                    path=path,
                    message=f"environment variable {name} is not set (referenced as ${{{name}}})",
                )
            )
        return found


def _malformed(reference: str) -> str:
    # The reference's text may be part of a secret, so it is not repeated.
    kind = "unclosed ${" if not reference.endswith("}") else "malformed ${...}"
    return (
        f"{kind} reference: expected ${{NAME}} with NAME of letters, digits and _ "
        "(write $${ for a literal ${)"
    )


def _key(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
