"""The README's SRT client recipes, read from the README itself so tests run what users copy.

A recipe is a `sh` code-block line (with its `\\` continuations) under a label comment:
`# publish (CLIENT)`, `# play (CLIENT)`, `# record (CLIENT)`, or
`# encrypted (CLIENT): add FRAGMENT [to WHERE]`, in the sections "Quick start" and
"Publish and play (SRT)". `localize` turns one into a command for a test gateway: its port,
a path, the input and output files, and the passphrase where the encrypted line says.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("Quick start", "Publish and play (SRT)")
ACTIONS = ("publish", "play", "record", "encrypted")

_LABEL = re.compile(
    r"# (?P<action>publish|play|record|encrypted) \((?P<client>[^)]+)\)(?P<rest>.*)"
)
_ADD = re.compile(r": add (?P<what>.+?)(?: (?P<where>to the srt:// URL|after \S+))?(?: \(.*\))?$")
# The gateway address as the README writes it: `gw:9000` or the quick start's local address.
_ADDRESS = re.compile(r"\b(?:gw|127\.0\.0\.1):9000\b")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")


@dataclass(frozen=True, slots=True)
class Recipe:
    """One labelled command of the README (`command` is one line: continuations joined)."""

    section: str
    action: str
    client: str
    command: str


@dataclass(frozen=True, slots=True)
class Encryption:
    """How a client's recipes become encrypted: add `what` (its `<...>` is the passphrase) to
    the srt:// URL (`where` is "to the srt:// URL"), after the word starting with X ("after X"),
    or at the end (no `where`)."""

    client: str
    what: str
    where: str | None

    def apply(self, command: str, passphrase: str) -> str:
        fragment = re.sub(r"<[^>]*>", passphrase, self.what)
        if self.where is None:
            return f"{command} {fragment}"
        if "srt://" in self.where:
            url = re.compile(r"srt://[^'\"\s]*")
            assert len(url.findall(command)) == 1, command
            return url.sub(lambda m: m.group(0) + fragment, command)
        prefix = self.where.removeprefix("after ")
        words = re.compile(r"(?<!\S)" + re.escape(prefix) + r"\S*")
        assert words.search(command), (self.where, command)
        return words.sub(lambda m: f"{m.group(0)} {fragment}", command)


def _sections(text: str) -> dict[str, str]:
    """Level-2 sections (with their subsections) by title."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _blocks(body: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)


def _labelled(block: str) -> list[tuple[re.Match[str], list[str]]]:
    """Each label comment of a block with the command lines under it (up to the next comment
    or blank line)."""
    out: list[tuple[re.Match[str], list[str]]] = []
    current: list[str] | None = None
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            label = _LABEL.fullmatch(line)
            current = None if label is None else []
            if label is not None and current is not None:
                out.append((label, current))
        elif current is not None:
            current.append(line)
    return out


def parse(text: str) -> tuple[list[Recipe], dict[str, Encryption]]:
    """The recipes and per-client encryption rules of a README's text."""
    sections = _sections(text)
    recipes: list[Recipe] = []
    encryption: dict[str, Encryption] = {}
    for title in SECTIONS:
        for block in _blocks(sections[title]):
            for label, lines in _labelled(block):
                action, client = label["action"], label["client"]
                if action == "encrypted":
                    add = _ADD.search(label["rest"])
                    assert add is not None, label.group(0)
                    encryption[client] = Encryption(client, add["what"], add["where"])
                    continue
                assert lines, f"no command under {label.group(0)!r}"
                command = " ".join(line.removesuffix("\\").strip() for line in lines)
                recipes.append(Recipe(title, action, client, command))
    return recipes, encryption


def readme() -> tuple[list[Recipe], dict[str, Encryption]]:
    """The recipes of this repository's README."""
    return parse(README.read_text())


def localize(
    recipe: Recipe,
    *,
    host: str,
    port: int,
    path: str,
    source: Path | None = None,
    output: Path | None = None,
    encryption: Encryption | None = None,
    passphrase: str | None = None,
) -> str:
    """`recipe.command` aimed at a test gateway (`host:port`), on `path`, reading `source` as
    `input.ts`, writing `output` as `out.ts`, encrypted when `passphrase` is given."""
    command = _ADDRESS.sub(f"{host}:{port}", recipe.command)
    assert "live/cam1" in command, command
    command = command.replace("live/cam1", path)
    for name, file in (("input.ts", source), ("out.ts", output)):
        pattern = re.compile(r"(?<![\w/.-])" + re.escape(name) + r"\b")
        if file is None:
            assert not pattern.search(command), f"{name} needs a file: {command}"
            continue
        # Substituted inside the README's own quoting: the path must need none.
        assert _SAFE_PATH.fullmatch(str(file)), file
        assert pattern.search(command), f"no {name} in {command}"
        command = pattern.sub(str(file), command)
    if passphrase is not None:
        assert encryption is not None, f"the README has no '# encrypted ({recipe.client})' line"
        command = encryption.apply(command, passphrase)
    shlex.split(command)  # a quoting mistake fails here, not in a shell
    return command


def srt_tokens(command: str) -> set[str]:
    """The words of a command that say where and what it reads: the srt:// URL, stream id."""
    return {word for word in shlex.split(command) if "srt://" in word or "streamid" in word}
