"""The ``mlpsweep`` command line: the one place in the project that prints for people.

Each subcommand lives in its own ``sweeps/cmd_*.py`` module exposing ``register(subparsers)``;
modules import heavy engines (torch, Ray, MLflow) inside their handlers so ``--help`` is fast.
Exit codes: 0 success, 1 the work ran and failed (e.g. verification failed), 2 bad input.
"""
from __future__ import annotations

import argparse
import atexit
import difflib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

__all__ = ["main", "build_parser", "UsageError", "positive_int", "output_folder", "first_line"]

# Order here is the order in --help.
COMMAND_MODULES = (
    "sweeps.cmd_run",
    "sweeps.cmd_validate",
    "sweeps.cmd_verify",
    "sweeps.cmd_status",
    "sweeps.cmd_best",
    "sweeps.cmd_submit",
    "sweeps.cmd_report",
)


class UsageError(Exception):
    """Bad input from the user: printed as one line per problem, exit code 2."""


def first_line(exc: BaseException, fallback: str | None = None, limit: int = 300) -> str:
    """What a one-line usage error quotes of ``exc``: its message's first line (at most ``limit``
    characters), else ``fallback``, else the exception's type."""
    text = str(exc).strip()
    return (text.splitlines()[0].strip() if text else fallback or type(exc).__name__)[:limit]


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def output_folder(text: str, flag: str = "--out") -> Path:
    """A folder a command will write into (created then, not now: nothing is left behind by a
    command that fails before writing), checked up front.

    Raises:
        UsageError: empty, an existing file, or under a path where no folder can be made.
    """
    if not text.strip():
        raise UsageError(f"{flag}: give a folder name")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag}: {path} exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag}: cannot make a folder under {existing}: it is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write in {existing}: permission denied")
    return path


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag or argument is one line on stderr (exit 2), as every other
    usage error of the command line is, instead of the usage block followed by the error; the
    line says where the full usage is. Subcommands' parsers are of this class too (argparse
    makes them of their parent's class)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the top parser's: its subcommands' parsers

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """argparse's, but unknown flags are reported by the subcommand they were given to, with the
        flag they most resemble (``--concurency`` → ``--concurrency``)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self.commands.get(getattr(parsed, "command", None) or "", self)
            flags = [flag for action in parser._actions for flag in action.option_strings]
            close = [m for x in extras if x.startswith("-")
                     for m in difflib.get_close_matches(x.split("=", 1)[0], flags, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlpsweep")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mlpsweep",
        description=(
            "Hyperparameter sweeps for multi-layer perceptrons: Optuna proposes MLP variants, "
            "Ray workers train them with PyTorch (all restarts of a trial at once), every trial, "
            "checkpoint and backprop verification lands in MLflow."
        ),
        epilog="Run 'mlpsweep COMMAND --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    parser.commands = dict(sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # MLflow announces database migrations and downloads at INFO
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # a line per retry; the error says it all
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a "View run" line per run
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        for line in str(exc).splitlines() or ["bad input"]:
            print(f"mlpsweep {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


def entry() -> None:
    """The ``mlpsweep`` command: :func:`main`, then the exit handlers (Ray's shutdown, logging,
    child processes, temporary files) and the exit itself, without the interpreter's teardown of
    every module and object: after ``mlpsweep run`` that took 1.3 s of torch, Ray, MLflow and
    Optuna objects being freed one by one, for nothing."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    # Run through the package's module so exception classes are the ones handlers raise
    # (``python -m sweeps.cli`` would otherwise load this file twice, as two modules).
    from sweeps.cli import entry as _entry

    _entry()
