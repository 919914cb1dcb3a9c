"""The `moqsrt` command: subcommands dispatch to the module that owns them.

`moqsrt serve` runs the gateway (`gateway.serve`), `moqsrt probe` imports a TS file and reports
on it (`gateway.probe`). Each subcommand module exposes `add_arguments(parser)` and
`run(args) -> int`; this module only wires them together, so importing it stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# subcommand name -> (module, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("gateway.serve", "run the gateway (SRT and MoQ)"),
    "probe": ("gateway.probe", "report what a TS file or a live SRT/MoQ source contains"),
    "usage": ("gateway.cli_usage", "print usage totals and session records from the ledger"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered.

    With `only` (a subcommand name) only that subcommand's module is imported and its options
    added; the others are listed by name and help alone. `moqsrt probe` then does not pay for
    importing the server (aiohttp, aioquic, prometheus_client): about 1 CPU second.
    """
    parser = argparse.ArgumentParser(prog="moqsrt", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and the TS packet path in use"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


class _VersionAction(argparse.Action):
    """`--version`: prints the version text and exits; the text (which imports `mux`) is only
    worked out when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", 0)
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(_version_text() + "\n")
        parser.exit()


def _version_text() -> str:
    """`moqsrt --version`: the package version and which TS packet path runs (`mux._impl`)."""
    from importlib.metadata import PackageNotFoundError, version

    from mux import _impl

    try:
        number = version("moqsrt")
    except PackageNotFoundError:
        number = "(not installed)"
    return f"moqsrt {number}, TS packet path: {_impl.NAME}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `moqsrt` console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    only = chosen if chosen in _SUBCOMMANDS else None
    args = build_parser(only).parse_args(args_list)
    status: int = args._module.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
