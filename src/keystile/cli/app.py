"""The ``keystile`` command: its nouns, ``--version``, shell completion, and
how a failure is reported (one line on stderr, a non-zero exit status:
1 for a failed operation, 2 for a command line that is wrong)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keystile import __version__
from keystile.cli import accounts, keys, operator_keys, server, usage
from keystile.cli.output import error_line
from keystile.cli.runtime import ConfigurationError
from keystile.errors import KeystileError
from keystile.storage.base import StorageUnavailable

app = typer.Typer(
    name="keystile",
    help="keystile: issue, verify, meter and revoke API keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
server.register(app)
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(operator_keys.app, name="operator-keys")
app.add_typer(usage.app, name="usage")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"keystile {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """keystile: issue, verify, meter and revoke API keys."""


def _usage_error(exc: BaseException) -> bool:
    """Click's usage errors. Typer vendors its own copy of click (not a public
    module), so they are recognised by interface rather than by class."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def _report(exc: BaseException) -> int:
    """Write ``exc`` as one line on stderr; the exit status."""
    if _usage_error(exc):
        message = exc.format_message()  # type: ignore[attr-defined]
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(message, file=sys.stderr)  # the help itself, as click prints it
            return 2
        path = getattr(context, "command_path", None) or "keystile"
        stop = "" if message.endswith((".", "?", "!")) else "."
        print(f"keystile: error: {message}{stop} See '{path} --help'.", file=sys.stderr)
        return int(exc.exit_code)  # type: ignore[attr-defined]
    if type(exc).__name__ == "Abort":
        print("keystile: aborted", file=sys.stderr)
        return 130
    if isinstance(exc, KeystileError):
        line = error_line(exc)
    elif isinstance(exc, ConfigurationError):
        line = str(exc)
    elif isinstance(exc, StorageUnavailable):
        line = f"the database is unavailable: {exc}"
    else:
        line = f"{type(exc).__name__}: {exc}"
    first = line.splitlines()[0] if line else type(exc).__name__
    print(f"keystile: error: {first}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    """The console script ``keystile`` (also ``python -m keystile``)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="keystile", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        sys.exit(_report(exc))
    if isinstance(result, int) and result != 0:
        sys.exit(result)
