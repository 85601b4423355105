"""Usage mistakes in the one error format: `error: ...` and `hint: ...`, exit 2.

Click reports a bad option in four lines of its own (usage, "Try ...", a blank line,
"Error: ..."); cas says every other failure in one line plus a hint, so these are
rewritten here. A value that came from an environment variable names the variable:
the user did not type it and would otherwise look for it on the command line.
"""

from __future__ import annotations

USAGE_EXIT = 2


def describe(exc: Exception) -> tuple[str, str]:
    """(message, hint) for one of click's usage errors (``typer.BadParameter`` and its siblings)."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "cas"
    param = getattr(exc, "param", None)
    envvar = _envvar_source(ctx, param)
    if envvar is not None:
        reason = getattr(exc, "message", "") or "invalid value"
        return _one_line(f"invalid value in ${envvar}: {reason}"), f"fix or unset {envvar}; see `{command} --help`"
    hint = f"see `{command} --help`"
    if param is None:
        return _one_line(exc.format_message()), hint
    name = param.metavar if param.param_type_name == "argument" else max(param.opts, key=len)
    if not getattr(exc, "message", ""):  # click raises MissingParameter with no message, every other error with one
        return f"missing {param.param_type_name} {name}", hint
    return _one_line(f"invalid value for {name}: {getattr(exc, 'message', '')}"), hint


def _envvar_source(ctx: object, param: object) -> str | None:
    """The environment variable ``param``'s value was read from, if it came from one."""
    name = getattr(param, "name", None)
    if ctx is None or name is None:
        return None
    source = ctx.get_parameter_source(name)  # type: ignore[attr-defined]
    if getattr(source, "name", None) != "ENVIRONMENT":
        return None
    envvar = getattr(param, "envvar", None)
    if isinstance(envvar, (list, tuple)):
        import os

        envvar = next((name for name in envvar if os.environ.get(name)), envvar[0] if envvar else None)
    return envvar


def _one_line(text: str) -> str:
    """Click's sentences, shaped like ours: lower-case start, no full stop, one line."""
    text = " ".join(text.split())
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return text.removesuffix(".")
