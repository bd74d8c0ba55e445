"""The `crnn` Typer app: global options, subcommand registration, errors -> one line + exit code.

Nothing here imports torch at module level, so `crnn --help` and `crnn --version` stay fast.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import traceback
import warnings
from typing import Optional

import typer
import typer.core

from . import commands, render, state

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


PIPE_CLOSED = 128 + 13  # the status a shell reports for a producer ended by SIGPIPE (141)


def _end_on_closed_pipe() -> None:
    """A reader that goes away (`crnn predict dir | head -1`) ends crnn at once and silently,
    by SIGPIPE, as it ends `cat`, `find` or `seq`: exit status 141, no input read further.

    One rule for every write, ours or Rich's or the help's. (Python ignores SIGPIPE, and Click
    would turn the BrokenPipeError into exit 1 with an empty stderr.)
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


# Commands whose processes talk to others over sockets or pipes (torchrun and gloo; synth's
# worker pool): there SIGPIPE would kill a process instead of raising an error it can handle.
KEEP_SIGPIPE_IGNORED = {"train", "synth"}


class _Command(typer.core.TyperCommand):
    """Every subcommand. Those in KEEP_SIGPIPE_IGNORED keep Python's SIGPIPE handling; there,
    and wherever SIGPIPE does not exist, a closed stdout ends the command with the same status
    141, silently, stdout pointed at /dev/null so the flush at exit cannot fail again (as the
    Python docs' "Note on SIGPIPE" advises)."""

    def invoke(self, ctx):
        if self.name in KEEP_SIGPIPE_IGNORED and hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            try:
                return super().invoke(ctx)
            finally:  # here, where a closed pipe can still be answered, not in the flush at exit
                if sys.stdout is not None:
                    sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
            raise typer.Exit(PIPE_CLOSED) from None


class _StdoutRaw(io.FileIO):
    """Descriptor 1, whose failed writes (a full disk, a device error) name it, as a file's would:
    the one error handler then reports "stdout: No space left on device" in one line."""

    def write(self, data):
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "stdout") from None


def _name_stdout() -> None:
    old = sys.stdout
    if not hasattr(old, "fileno"):
        return  # already replaced (a test harness): leave it
    try:
        raw = _StdoutRaw(old.fileno(), "w", closefd=False)
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    old.flush()
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=old.encoding, errors=old.errors,
                                  line_buffering=old.line_buffering)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit cannot fail (and print) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


app.command("train", cls=_Command)(commands.train)
app.command("eval", cls=_Command)(commands.evaluate)
app.command("predict", cls=_Command)(commands.predict)
app.command("export", cls=_Command)(commands.export)
app.command("calibrate", cls=_Command)(commands.calibrate)
app.command("info", cls=_Command)(commands.info)
app.command("synth", cls=_Command)(commands.synth)
data_app.command("check", cls=_Command)(commands.data_check)


def _fail(message: str, code: int) -> None:
    if state.debug:
        traceback.print_exc()
    render.error(message)
    sys.exit(code)


def main() -> None:
    state.debug = "--debug" in sys.argv[1:]
    if sys.stdout is None:  # started with descriptor 1 closed: every result would be lost unseen
        _fail("stdout: is closed; redirect it to a file (or to /dev/null to drop the results)", 1)
    _name_stdout()
    _end_on_closed_pipe()
    # Pillow warns on stderr about damaged metadata and big images; crnn reports each file
    # it cannot use in one line of its own, so those warnings would only be noise.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    try:
        code = app(prog_name="crnn", standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("crnn: interrupted\n")
        sys.exit(130)
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # Click's usage errors: a bad flag or value
        _fail_usage(exc)
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        from crnn_core.errors import CrnnError

        if isinstance(exc, CrnnError):
            _fail(str(exc), getattr(exc, "exit_code", 1))  # UsageError: 2, like a bad flag
        if isinstance(exc, MemoryError):
            _fail("out of memory (try a smaller --batch-size)", 1)
        if isinstance(exc, OSError) and exc.filename:
            if exc.filename == "stdout":
                _drop_stdout()  # what is still buffered would fail (and print) again at exit
            _fail(f"{exc.filename}: {exc.strerror}", 1)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n


def _fail_usage(exc) -> None:
    """A usage error in one line, as every other failure, and where to look (Click's own is a
    usage line, a hint and a framed message); `crnn` alone has printed its help already."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":
        sys.exit(2)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _fail(exc.format_message() + hint, getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
