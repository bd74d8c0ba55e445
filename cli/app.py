"""The `crnn` Typer app: global options, subcommand registration, errors -> one line + exit code.

Nothing here imports torch at module level, so `crnn --help` and `crnn --version` stay fast.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Optional

import typer

from . import commands, state

app = typer.Typer(
    name="crnn",
    help="Train and run sequence-from-image recognisers (CNN + BiLSTM + CTC): "
         "text lines, captchas, licence plates, meter readings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"crnn {version('crnn')}")
        except PackageNotFoundError:
            typer.echo("crnn (not installed)")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback when something fails."),
) -> None:
    state.debug = debug


app.command("train")(commands.train)
app.command("eval")(commands.evaluate)
app.command("predict")(commands.predict)
app.command("export")(commands.export)
app.command("info")(commands.info)
data_app.command("check")(commands.data_check)


def _fail(message: str, code: int) -> None:
    if state.debug:
        traceback.print_exc()
    sys.stderr.write(f"crnn: error: {message}\n")
    sys.exit(code)


def main() -> None:
    state.debug = "--debug" in sys.argv[1:]
    # Pillow warns on stderr about damaged metadata and big images; crnn reports each file
    # it cannot use in one line of its own, so those warnings would only be noise.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    try:
        app(prog_name="crnn")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("crnn: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`crnn predict ... | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        from crnn_core.errors import CrnnError

        if isinstance(exc, CrnnError):
            _fail(str(exc), getattr(exc, "exit_code", 1))  # UsageError: 2, like a bad flag
        if isinstance(exc, MemoryError):
            _fail("out of memory (try a smaller --batch-size)", 1)
        if isinstance(exc, OSError) and exc.filename:
            _fail(f"{exc.filename}: {exc.strerror}", 1)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)", 1)


if __name__ == "__main__":
    main()
