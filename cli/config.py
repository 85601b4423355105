"""cas config: each setting's effective value and where it came from (flag aside: none is given here)."""

from __future__ import annotations

from cli import options, output


def config(as_json: options.Json = False) -> None:
    """Show every setting's value and its origin: a variable, the config file (FILE:LINE), or the default.

    Precedence is flag, then variable, then ${XDG_CONFIG_HOME:-~/.config}/cas/config.toml
    ($CAS_CONFIG names another file), then the default.

    \b
    Examples:
      cas config
      cas config --json | jq '.settings[] | select(.origin == "file")'
    """
    from cas.settings import current

    settings = current()
    values = settings.effective()
    path = settings.config.path
    if as_json:
        output.emit_json(
            "config",
            {"file": str(path), "file_exists": settings.config.exists, "settings": [v.to_json() for v in values]},
        )
        return
    print(f"config file: {path}{'' if settings.config.exists else ' (absent)'}")
    rows = [("KEY", "VALUE", "ORIGIN")]
    for value in values:
        origin = {"env": f"${value.source}", "file": value.source}.get(value.origin, value.origin)
        rows.append((value.key, _show(value.key, value.value), origin))
    output.table(rows)


def _show(key: str, value: object) -> str:
    """A value as a user would write it: sizes in IEC units, durations in units, lists ','-joined, unset as '-'."""
    from cas.sizes import format_duration

    if value is None or value == ():
        return "-"
    if key == "max-size":
        return f"{output.human_size(value)} ({value} bytes)"
    if key in ("max-age", "serve.budget-interval"):
        return f"{format_duration(value)} ({value:g} seconds)"
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
