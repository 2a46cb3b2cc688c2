"""Command line: one module per verb (``add_parser`` + ``run``); no logic of its own.

Every :class:`UserError` ends the program with one line on stderr and exit code 2. Under
torchrun, a rank whose collective failed only because another rank went away ends with one line
naming it and exit code 3 (the other rank printed the cause; classzoo.engine.launch). A closed
pipe (``classzoo data inspect ... | head``) ends quietly with 141, the status a shell reports for
a process killed by SIGPIPE (128 + 13), so ``set -o pipefail`` scripts see what ``cat`` gives.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from classzoo.cli.common import HelpFormatter
from classzoo.errors import UserError, one_line

# The verbs, in the order `classzoo --help` lists them; each is classzoo.cli.<module>.
VERBS = {
    "quickstart": "quickstart",
    "train": "train",
    "eval": "eval",
    "predict": "predict",
    "export": "export",
    "convert": "convert",
    "data": "data",
    "bench": "bench",
    "report": "report",
    "recipes": "recipes",
    "models": "models",
}
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE


def _module(verb: str):
    return importlib.import_module(f"classzoo.cli.{VERBS[verb]}")


def build_parser() -> argparse.ArgumentParser:
    import classzoo

    p = argparse.ArgumentParser(
        prog="classzoo", description=classzoo.__doc__, formatter_class=HelpFormatter
    )
    p.add_argument("--version", action="version", version=f"classzoo {classzoo.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        _module(verb).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _module(args.command).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except UserError as exc:
        _report(f"classzoo: error: {one_line(exc)}", "error")
        return UserError.exit_code
    except KeyboardInterrupt:
        print("classzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except Exception as exc:
        from classzoo.engine.launch import PEER_STOPPED_EXIT, peer_stopped, peer_stopped_line

        if not peer_stopped(exc):
            raise
        _report(peer_stopped_line(), "peer")
        return PEER_STOPPED_EXIT


def _report(line: str, kind: str) -> None:
    """``line`` on stderr, or to ``classzoo train --nproc-per-node``'s launcher, which prints
    each distinct line once for all ranks (classzoo.engine.launch)."""
    from classzoo.engine.launch import hand_to_launcher

    if not hand_to_launcher(line, kind):
        print(line, file=sys.stderr)


def _silence_stdout() -> None:
    """The reader went away: point stdout at /dev/null so the final flush at exit stays quiet.

    The recipe of Python's signal module documentation ("Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by a non-file object (tests)
        pass
    finally:
        os.close(devnull)


__all__ = ["build_parser", "main"]
