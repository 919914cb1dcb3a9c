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

# subcommand name -> (module, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("gateway.serve", "run the gateway (SRT and MoQ)"),
    "probe": ("gateway.probe", "report what a TS file or a live SRT/MoQ source contains"),
    "usage": ("gateway.cli_usage", "print usage totals and session records from the ledger"),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="moqsrt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def _version() -> str:
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
    args = build_parser().parse_args(argv)
    status: int = args._module.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
