"""What every command shares: consoles, the repo option, settings and one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from featurestore.errors import FeatureStoreError, ValidationFailed, unreachable

if TYPE_CHECKING:
    from featurestore.config import Settings

# no markup: messages carry user data (`pip install 'featurestore[faust]'`, JSON, keys), printed as is
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)
P = ParamSpec("P")
R = TypeVar("R")

RepoOpt = Annotated[Path, typer.Option("--repo", "-r", envvar="FEATURESTORE_REPO", help="Feature repository folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for programs) instead of a table.", metavar="")]


def error_line(message: object) -> None:
    """`error: <message>` on stderr, the message printed exactly as given."""
    err_console.print(Text("error:", style="red"), str(message), highlight=False, soft_wrap=True)


def warning_line(message: object, to: Console | None = None) -> None:
    """`warning: <message>` (stderr unless `to`), the message printed exactly as given."""
    (to or err_console).print(Text("warning:", style="yellow"), str(message), highlight=False, soft_wrap=True)


def cli_table(*headers: str, title: str | None = None) -> Any:
    """A table whose cells wrap instead of being cut, so it reads at 80 columns and when piped."""
    from rich.table import Column, Table

    return Table(*(Column(h, overflow="fold") for h in headers), title=title)


def short_number(value: float | None) -> str:
    """A statistic in a table cell: 4 significant digits, `-` when there is none."""
    return "-" if value is None else f"{value:.4g}"


def print_json(value: Any) -> None:
    """`value` as one line of JSON on stdout (datetimes as ISO 8601)."""
    import sys

    import orjson

    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one clear line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from confluent_kafka import KafkaException
        from redis import RedisError

        try:
            return fn(*args, **kwargs)
        except ValidationFailed as exc:
            error_line(f"{len(exc.problems)} problem(s) in the feature repository:")
            for p in exc.problems:
                err_console.print(f"  - {p}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except FeatureStoreError as exc:
            error_line(exc)
            raise typer.Exit(1) from None
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args else str(exc)
            error_line(unreachable('Kafka', _where('kafka', kwargs.get('repo')), reason))
            raise typer.Exit(1) from None
        except RedisError as exc:
            error_line(unreachable('Redis', _where('redis', kwargs.get('repo')), exc))
            raise typer.Exit(1) from None

    return wrapper


def _where(service: str, repo: object) -> str:
    """The address the command used for a service (credentials hidden); `repo`: the command's --repo."""
    try:
        settings = _settings(Path(repo) if isinstance(repo, (str, Path)) else Path("."))
    except Exception:  # the settings themselves are broken: that error was not this one
        return "the configured address"
    return str(settings.kafka.bootstrap_servers if service == "kafka" else settings.redis.display)


def _settings(repo: Path) -> Settings:
    from featurestore.config import load_settings

    return load_settings(repo)
