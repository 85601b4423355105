"""Settings: each from its flag, else its environment variable, else config.toml, else its default.

The one reader of the environment and of the config file for these settings, so that a
value means the same to every command and ``cas config`` can say where each came from.
The file is ``$CAS_CONFIG``, else ``${XDG_CONFIG_HOME:-~/.config}/cas/config.toml``; a
malformed file or an unknown key stops every command (one line naming file, line and key)
rather than letting it run on defaults the user did not choose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cas import DEFAULT_LOCK_TIMEOUT
from cas.errors import ConfigError, UsageError
from cas.sizes import parse_duration, parse_size

DEFAULT_JOBS = 4  # blobs transferred at once
DEFAULT_CONNECTIONS = 8  # per pull in all, range requests included
DEFAULT_TIMEOUT = 30.0  # seconds: connect, wait for an answer, stall window
DEFAULT_MIN_RATE = 1024  # bytes per second below which a transfer is stalled
DEFAULT_LISTEN = "127.0.0.1:5050"  # loopback: a pull-through server must not be open to the network by default
DEFAULT_SERVE_CONNECTIONS = 512  # connections `cas serve` holds open at once
DEFAULT_BUDGET_INTERVAL = 600.0  # seconds between a running `cas serve`'s checks of the budget


def _number(kind: type, low: float, high: float | None, what: str) -> Callable[[object], object]:
    """A parser for a number in [low, high] that says in plain words what the setting is."""
    whole = kind is int
    span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
    words = f"{'a whole number' if whole else 'a number'} {span} ({what})"

    def parse(raw: object) -> object:
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not {words}")
        try:
            value = kind(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not {words}") from None
        fraction = whole and not isinstance(raw, str) and value != raw  # 2.5 jobs in the file
        if fraction or value != value or value < low or (high is not None and value > high):
            raise ValueError(f"{raw!r} is not {words}")
        return value

    return parse


def _text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a non-empty string")
    return raw.strip()


def _texts(raw: object) -> tuple[str, ...]:
    """A list of strings; from a variable, ':'-separated (as $CAS_HOSTS_DIR always was)."""
    items = raw.split(":") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{raw!r} is not a list of strings")
    return tuple(i for i in items if i)


def _size(raw: object) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else parse_size(str(raw))


def _duration(raw: object) -> float:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else parse_duration(str(raw))


def _interval(raw: object) -> float:
    seconds = _duration(raw)
    if not seconds > 0:
        raise ValueError(f"{raw!r} is not a duration longer than 0 (10m, 30s)")
    return seconds


def _platform(raw: object) -> str:
    """One platform, or several comma-separated (`cas pull` takes a list; export checks that it is one)."""
    from cas.errors import CasError
    from cas.manifest import Platform

    text = _text(raw)
    try:
        for part in text.split(","):
            Platform.parse(part)
    except CasError as exc:
        raise ValueError(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None
    return text


@dataclass(frozen=True)
class Setting:
    key: str  # as written in config.toml ("serve.listen" is `listen` under `[serve]`)
    default: object
    parse: Callable[[object], object]  # a variable's text or a TOML value -> the value; ValueError in plain words
    env: tuple[str, ...] = ()  # variables read, the first set one wins


SETTINGS = {
    s.key: s
    for s in (
        Setting("max-size", None, _size, env=("CAS_MAX_SIZE",)),
        Setting("max-age", None, _duration, env=("CAS_MAX_AGE",)),
        Setting("jobs", DEFAULT_JOBS, _number(int, 1, 32, "blobs transferred at once"), env=("CAS_JOBS",)),
        Setting(
            "connections", DEFAULT_CONNECTIONS, _number(int, 1, 64, "connections per pull"), env=("CAS_CONNECTIONS",)
        ),
        Setting("timeout", DEFAULT_TIMEOUT, _number(float, 0.1, None, "seconds"), env=("CAS_TIMEOUT",)),
        Setting("min-rate", DEFAULT_MIN_RATE, _number(int, 0, None, "bytes per second"), env=("CAS_MIN_RATE",)),
        Setting("lock-timeout", DEFAULT_LOCK_TIMEOUT, _number(float, 0, None, "seconds"), env=("CAS_LOCK_TIMEOUT",)),
        Setting("platform", None, _platform, env=("CAS_PLATFORM", "DOCKER_DEFAULT_PLATFORM")),
        Setting("hosts-dir", None, _texts, env=("CAS_HOSTS_DIR",)),
        Setting("registries-conf", None, str, env=("CAS_REGISTRIES_CONF",)),
        Setting("daemon-json", None, str, env=("CAS_DOCKER_DAEMON_JSON",)),
        Setting("serve.listen", DEFAULT_LISTEN, _text),
        Setting("serve.upstreams", (), _texts),
        Setting(
            "serve.max-connections",
            DEFAULT_SERVE_CONNECTIONS,
            _number(int, 1, 65536, "connections cas serve holds open"),
            env=("CAS_SERVE_MAX_CONNECTIONS",),
        ),
        Setting("serve.budget-interval", DEFAULT_BUDGET_INTERVAL, _interval),  # cas.budget.watch
    )
}


@dataclass(frozen=True)
class Value:
    """One effective setting and where it came from."""

    key: str
    value: object
    origin: str  # "flag", "env", "file" or "default"
    source: str = ""  # the variable's name, or FILE:LINE

    def to_json(self) -> dict:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"key": self.key, "value": value, "origin": self.origin, "source": self.source or None}


@dataclass(frozen=True)
class Config:
    """The config file as read: its path, whether it exists, and each key's raw value and line."""

    path: Path
    exists: bool
    entries: Mapping[str, tuple[object, int]]

    def where(self, key: str) -> str:
        return f"{self.path}:{self.entries[key][1]}"


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("CAS_CONFIG"):
        return Path(env["CAS_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cas" / "config.toml"


def read_config(path: Path) -> Config:
    """Parse ``path`` (absent: an empty config); every key known and every value valid, else ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path, False, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}", hint="fix it, or point $CAS_CONFIG elsewhere") from exc
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise ConfigError(
            f"{path}:{line.group(1) if line else '?'}: not valid TOML: {str(exc).split(' (at line')[0]}",
            hint='fix the file: TOML is key = value, text in quotes (max-size = "20GiB")',
        ) from None
    entries: dict[str, tuple[object, int]] = {}
    lines = _key_lines(text)
    for key, raw in _flatten(data):
        line = lines.get(key, 0)
        setting = SETTINGS.get(key)
        if setting is None:
            raise ConfigError(
                f"{path}:{line}: unknown key {key!r}",
                hint=f"the keys are {', '.join(SETTINGS)}",
            )
        try:
            setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{path}:{line}: {key}: {exc}", hint="fix the value or remove the line") from None
        entries[key] = (raw, line)
    return Config(path, True, entries)


def _flatten(data: dict) -> list[tuple[str, object]]:
    """Top-level keys, and a table's keys under its name (``[serve]`` ``listen`` -> ``serve.listen``)."""
    out: list[tuple[str, object]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += [(f"{key}.{inner}", item) for inner, item in value.items()]
        else:
            out.append((key, value))
    return out


_TABLE = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"""\s*["']?([A-Za-z0-9_.-]+)["']?\s*=""")


def _key_lines(text: str) -> dict[str, int]:
    """Each key's line (first seen), with its table's name in front: ``serve.listen``."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE.match(line)
        if header:
            table = header.group(1) + "."
            lines.setdefault(header.group(1), number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(table + key.group(1), number)
    return lines


class Settings:
    """The environment and config file of this process, resolved one setting at a time."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.config = read_config(config_path(self.env))

    def resolve(self, key: str, flag: object = None) -> Value:
        setting = SETTINGS[key]
        if flag is not None and flag != [] and flag != ():
            return Value(key, flag, "flag")
        for name in setting.env:
            text = self.env.get(name, "").strip()
            if text:
                try:
                    return Value(key, setting.parse(text), "env", name)
                except ValueError as exc:
                    raise UsageError(f"invalid value in ${name}: {exc}", hint=f"fix or unset {name}") from None
        if key in self.config.entries:
            return Value(key, setting.parse(self.config.entries[key][0]), "file", self.config.where(key))
        return Value(key, setting.default, "default")

    def value(self, key: str, flag: object = None) -> object:
        return self.resolve(key, flag).value

    def effective(self) -> list[Value]:
        return [self.resolve(key) for key in SETTINGS]

    def endpoint_env(self) -> dict[str, str]:
        """The variables cas.registry.endpoints reads, with the config file's values where none is set
        (each path checked here, so that a missing one is blamed on its line of the file)."""
        env = dict(self.env)
        for key in ("hosts-dir", "registries-conf", "daemon-json"):
            found = self.resolve(key)
            if found.origin != "file":
                continue
            paths = found.value if isinstance(found.value, tuple) else (found.value,)
            for path in paths:
                if not (os.path.isdir if key == "hosts-dir" else os.path.isfile)(path):
                    raise ConfigError(
                        f"{found.source}: {key}: {path} does not exist", hint="fix the path or remove the line"
                    )
            env[SETTINGS[key].env[0]] = ":".join(paths)
        return env


_current: Settings | None = None


def current() -> Settings:
    """This process's settings, read once (the config file is parsed on first use)."""
    global _current
    if _current is None:
        _current = Settings()
    return _current
