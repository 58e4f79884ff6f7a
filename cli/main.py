"""The ``egeunet`` command line: one sub-command per job, each a thin call into the part that does the work.

Each part registers its own sub-commands (``cmd_model``, ``cmd_export``, ``cmd_runtimes``); every one takes
``--verbose`` (third-party output on the console; by default it goes to a log file, see ``console``), and when stderr
is not a terminal progress bars are off. Errors a user can fix
(bad data, wrong weights, bad options) print one clear message and exit with status 2; an interrupt exits with 130;
output piped into a reader that stops early (``egeunet info --json | head``) exits quietly with 141, as a Unix tool
killed by SIGPIPE does; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, PermissionError,
                                                NotADirectoryError, IsADirectoryError)
COMMAND_MODULES = ("cmd_model", "cmd_export", "cmd_runtimes", "cmd_golden")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egeunet", description="EGE-UNet from PyTorch training to phones.")
    parser.add_argument("--version", action="version", version=f"egeunet-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="show the converters' and runtimes' own output (third-party libraries) as it "
                                  "comes; default: it goes to a log file named at the end of the run")
    return parser


def describe(e: BaseException) -> str:
    """The message of a user error; the OS's own ones ("[Errno 17] File exists: 'x'") say what to fix instead."""
    if not (isinstance(e, OSError) and e.filename and e.strerror):
        return str(e)
    if isinstance(e, FileExistsError):
        return f"{e.filename}: a file is in the way; a folder is needed there"
    if isinstance(e, NotADirectoryError):
        return f"{e.filename}: part of this path is a file, not a folder"
    if isinstance(e, IsADirectoryError):
        return f"{e.filename}: a folder is in the way; a file is needed there"
    return f"{e.filename}: {e.strerror}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from egeunet_deploy.model.interrupts import remember_interrupts

    from .console import is_terminal, log_destination, third_party_to_log

    if hasattr(args, "no_progress") and not is_terminal(sys.stderr):
        args.no_progress = True  # a log file or a pipe gets plain lines, not progress bars and their escape codes
    restore_sigint = remember_interrupts()
    try:
        with third_party_to_log(args.command, lambda: log_destination(args), verbose=args.verbose):
            return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader is gone; point stdout at /dev/null so the interpreter's flush at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        restore_sigint()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
