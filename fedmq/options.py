"""What every `fedmq` command shares: settings classes as click options (one --flag per field,
with the field's description as help and a FEDMQ_* environment variable twin), loading them with
flags over environment over defaults, logging set-up, and configuration errors shown as messages."""

from __future__ import annotations

import contextlib
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from common.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)
F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is Path:
        return click.Path(path_type=Path)
    return {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(annotation, click.STRING)


def settings_options(cls: type[BaseSettings]) -> Callable[[F], F]:
    """Add one --flag per settings field (default None: unset flags defer to env and defaults)."""

    def decorate(command: F) -> F:
        for name, info in reversed(list(cls.model_fields.items())):
            default = info.default if info.default is not None else "unset"
            help_text = (f"{info.description} [env FEDMQ_{name.upper()}; default {default}]")
            flag = f"--{name.replace('_', '-')}"
            if info.annotation is bool:  # an on/off switch rather than an option taking a value
                command = click.option(f"{flag}/--no-{flag[2:]}", name, default=None,
                                       help=help_text)(command)
                continue
            command = click.option(flag, name, default=None,
                                   type=_click_type(info.annotation), help=help_text)(command)
        return command

    return decorate


def load_settings(cls: type[S], flags: dict[str, Any]) -> S:
    """Settings from the given flags over FEDMQ_* env vars over defaults; bad values exit 2."""
    try:
        return cls(**{key: value for key, value in flags.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pika logs every failed connection attempt as several ERROR lines with a traceback; the
    # service edge logs one line per attempt with the reason instead (common/reconnect.py)
    logging.getLogger("pika").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A bad model, data file or dataset ends the command with its message, not a traceback."""
    try:
        yield
    except ConfigError as exc:
        error = click.ClickException(str(exc))
        error.exit_code = getattr(exc, "exit_code", 1)  # 3: checkpoint, 4: job in use
        raise error from None
