"""The Makefile's set-up rules (issue 13): who runs apt-get, and which Python makes the venv.

Each test runs the real Makefile with GNU make under a PATH holding only stand-ins: `id` (prints
the uid the test chooses), `sudo` (present or not; runs its command as uid 0), `apt-get` and
`dpkg-query` (a log and a list of installed packages instead of Debian's), `npm` (logs what it
was asked and from which directory), and `python3*` wrappers around this interpreter that report
the version the test chooses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "make"
PRINT_RULE = 'print-%: ; @echo "[$($*)]"'


@dataclass(frozen=True, slots=True)
class Machine:
    """A fake machine: its bin directory, apt-get's log and the list of installed packages."""

    bin: Path
    apt_log: Path
    installed: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": str(self.bin), "HOME": str(self.bin.parent), **extra}

    def make(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run the project's Makefile (in the project root) on this machine."""
        return subprocess.run(
            [MAKE, "-s", "--no-print-directory", "-f", str(ROOT / "Makefile"), *args],
            cwd=ROOT,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def variable(self, name: str, **extra: str) -> str:
        """The value the Makefile gives `name` on this machine."""
        done = self.make("--eval", PRINT_RULE, f"print-{name}", **extra)
        assert done.returncode == 0, done.stderr
        match = re.fullmatch(r"\[(.*)\]\n", done.stdout)
        assert match is not None, done.stdout
        return match.group(1)

    def apt_calls(self) -> list[str]:
        """One line per apt-get run, `uid=<effective uid> <arguments>`, `venv` when the
        venv rule made one, and `npm <arguments> (in <dir name>)` per npm run."""
        if not self.apt_log.exists():
            return []
        return self.apt_log.read_text().splitlines()


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _python(bin_dir: Path, name: str, version: tuple[int, int, int], *, venv: bool) -> None:
    """A `name` on PATH that is this interpreter claiming to be `version` (and, unless `venv`,
    lacking ensurepip, as Debian's python3 does without python3-venv)."""
    site = bin_dir.parent / f"site-{name}"
    site.mkdir()
    lines = ["import sys", f"sys.version_info = {version!r}"]
    if not venv:
        lines.append("sys.modules['ensurepip'] = None  # type: ignore[assignment]")
    (site / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    dotted = ".".join(map(str, version))
    # `-m venv DIR` is only logged: making a real venv is not what these tests are about.
    _script(
        bin_dir / name,
        f'[ "$1" = --version ] && {{ echo "Python {dotted}"; exit 0; }}\n'
        f'[ "$1" = -m ] && [ "$2" = venv ] && {{ echo "{name} $*" >> "{bin_dir.parent}/venv.log"; '
        f'echo venv >> "{bin_dir.parent}/apt.log"; mkdir -p "$3"; exit 0; }}\n'
        f'PYTHONPATH="{site}" exec "{sys.executable}" "$@"\n',
    )


def machine(
    tmp_path: Path,
    *,
    uid: int,
    sudo: bool,
    pythons: dict[str, tuple[int, int, int]],
    venv: bool = True,
    installed: tuple[str, ...] = (),
    slow_install: bool = False,
    npm: bool = True,
) -> Machine:
    """A bin directory with the stand-ins, and nothing else on PATH (so no real sudo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    installed_list = tmp_path / "installed"
    installed_list.write_text("".join(f"{p}\n" for p in installed))
    for tool in ("grep", "env", "mkdir", "touch", "sleep", "basename"):
        real = shutil.which(tool)
        assert real is not None, tool
        (bin_dir / tool).symlink_to(real)
    # sudo runs its command as root: the stand-in `id` answers 0 below it.
    _script(bin_dir / "id", f'[ "$1" = -u ] && echo "${{FAKE_UID:-{uid}}}"\n')
    if sudo:
        _script(bin_dir / "sudo", 'FAKE_UID=0 exec "$@"\n')
    # A slow install shows a venv made before the install ended (see -j below).
    slow = "sleep 0.3\n" if slow_install else ""
    _script(bin_dir / "apt-get", f'{slow}echo "uid=$(id -u) $*" >> "{log}"\n')
    if npm:
        _script(bin_dir / "npm", f'echo "npm $* (in $(basename "$PWD"))" >> "{log}"\n')
    _script(
        bin_dir / "dpkg-query",
        f'pkg=""; for a in "$@"; do pkg="$a"; done\n'
        f'grep -qx "$pkg" "{installed_list}" || exit 1\n'
        'echo "install ok installed"\n',
    )
    for name, version in pythons.items():
        _python(bin_dir, name, version, venv=venv)
    return Machine(bin=bin_dir, apt_log=log, installed=installed_list)


def deb_packages() -> list[str]:
    """DEB_PACKAGES as the Makefile defines it (read by make, not parsed here)."""
    done = subprocess.run(
        [MAKE, "-s", "--no-print-directory", "--eval", PRINT_RULE, "print-DEB_PACKAGES"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().strip("[]").split()


NEW = (3, 11, 2)
NEWER = (3, 13, 1)
OLD = (3, 9, 2)


@pytest.mark.parametrize(
    ("uid", "sudo", "expected"),
    [(0, True, ""), (0, False, ""), (1000, True, "sudo"), (1000, False, "")],
)
def test_sudo_is_used_only_by_a_user_who_has_it(
    tmp_path: Path, uid: int, sudo: bool, expected: str
) -> None:
    box = machine(tmp_path, uid=uid, sudo=sudo, pythons={"python3": NEW})
    assert box.variable("SUDO") == expected


@pytest.mark.parametrize(("uid", "sudo"), [(0, False), (0, True), (1000, True)])
def test_missing_packages_are_installed_by_root_or_through_sudo(
    tmp_path: Path, uid: int, sudo: bool
) -> None:
    packages = deb_packages()
    box = machine(
        tmp_path, uid=uid, sudo=sudo, pythons={"python3": NEW}, installed=tuple(packages[1:])
    )
    done = box.make("system-deps")
    assert done.returncode == 0, done.stderr
    assert box.apt_calls() == [
        "uid=0 update -qq",
        f"uid=0 install -y -qq --no-install-recommends {packages[0]}",
    ]
    assert f"installing Debian packages: {packages[0]}" in done.stdout


def test_a_user_without_sudo_is_told_what_to_install(tmp_path: Path) -> None:
    box = machine(tmp_path, uid=1000, sudo=False, pythons={"python3": NEW})
    done = box.make("system-deps")
    assert done.returncode != 0
    assert box.apt_calls() == []
    assert "need root or sudo to install Debian packages:" in done.stderr
    for package in deb_packages():
        assert package in done.stderr


def test_nothing_is_installed_when_everything_is_there(tmp_path: Path) -> None:
    box = machine(
        tmp_path, uid=1000, sudo=False, pythons={"python3": NEW}, installed=tuple(deb_packages())
    )
    done = box.make("system-deps")
    assert done.returncode == 0, done.stderr
    assert box.apt_calls() == []
    assert done.stdout == ""


def test_the_system_python3_is_used_when_new_enough(tmp_path: Path) -> None:
    box = machine(tmp_path, uid=0, sudo=False, pythons={"python3": NEWER, "python3.11": NEW})
    assert box.variable("PYTHON") == "python3"


def test_an_old_python3_is_passed_over_for_a_newer_one(tmp_path: Path) -> None:
    box = machine(tmp_path, uid=0, sudo=False, pythons={"python3": OLD, "python3.12": NEW})
    assert box.variable("PYTHON") == "python3.12"


def test_python_from_the_environment_wins(tmp_path: Path) -> None:
    box = machine(tmp_path, uid=0, sudo=False, pythons={"python3": NEWER, "python3.11": NEW})
    assert box.variable("PYTHON", PYTHON="python3.11") == "python3.11"


def test_no_new_enough_python_installs_python3_then_says_what_it_found(tmp_path: Path) -> None:
    box = machine(
        tmp_path, uid=0, sudo=False, pythons={"python3": OLD}, installed=tuple(deb_packages())
    )
    assert box.variable("PYTHON") == ""
    done = box.make("system-deps")
    assert done.returncode == 0, done.stderr
    assert box.apt_calls()[-1].endswith(" python3 python3-venv")
    # Debian's python3 is still too old after that: the venv rule stops with a clear message.
    venv = tmp_path / "venv"
    done = box.make(f"VENV={venv}", f"{venv}/.installed")
    assert done.returncode != 0
    assert "need Python >= 3.11 (found Python 3.9.2)" in done.stdout + done.stderr
    assert not venv.exists()


def test_a_python_without_venv_support_gets_python3_venv(tmp_path: Path) -> None:
    box = machine(
        tmp_path,
        uid=0,
        sudo=False,
        pythons={"python3": NEW},
        venv=False,
        installed=tuple(deb_packages()),
    )
    assert box.variable("PYTHON") == "python3"
    done = box.make("system-deps")
    assert done.returncode == 0, done.stderr
    assert box.apt_calls() == [
        "uid=0 update -qq",
        "uid=0 install -y -qq --no-install-recommends python3 python3-venv",
    ]


def test_the_venv_is_made_with_the_chosen_python(tmp_path: Path) -> None:
    box = machine(tmp_path, uid=0, sudo=False, pythons={"python3": OLD, "python3.12": NEW})
    venv = tmp_path / "venv"
    # PY=true: the pip steps after `-m venv` need a network and a real venv.
    done = box.make(f"VENV={venv}", "PY=true", f"{venv}/.installed")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "venv.log").read_text() == f"python3.12 -m venv {venv}\n"
    assert (venv / ".installed").exists()


def test_packages_are_installed_before_the_venv_is_made_even_under_j(tmp_path: Path) -> None:
    box = machine(
        tmp_path, uid=0, sudo=False, pythons={"python3": NEW}, venv=False, slow_install=True
    )
    venv = tmp_path / "venv"
    stamp = tmp_path / "web.built"
    done = box.make("-j4", f"VENV={venv}", "PY=true", f"WEB_STAMP={stamp}", "deps")
    assert done.returncode == 0, done.stderr
    steps = [line.split()[1] if " " in line else line for line in box.apt_calls()]
    assert steps == ["update", "install", "venv", "ci", "run"]


NPM_CI = "npm ci --no-audit --no-fund --ignore-scripts --loglevel=error (in web)"
NPM_BUILD = "npm run --silent build (in web)"


def test_the_player_is_installed_from_the_lock_file_and_bundled_only_when_it_changed(
    tmp_path: Path,
) -> None:
    box = machine(
        tmp_path, uid=0, sudo=False, pythons={"python3": NEW}, installed=tuple(deb_packages())
    )
    venv, stamp, lock = tmp_path / "venv", tmp_path / "web.built", tmp_path / "package-lock.json"
    lock.write_text("{}")
    args = (f"VENV={venv}", "PY=true", f"WEB_STAMP={stamp}", f"WEB_SOURCES={lock}", "deps")
    done = box.make(*args)
    assert done.returncode == 0, done.stderr
    # No stdin, no prompt: `npm ci` installs exactly the lock file, then esbuild bundles.
    assert box.apt_calls() == ["venv", NPM_CI, NPM_BUILD]
    assert stamp.exists()
    assert box.make(*args).returncode == 0
    assert box.apt_calls() == ["venv", NPM_CI, NPM_BUILD]  # nothing changed: nothing redone
    later = stamp.stat().st_mtime + 5
    os.utime(lock, (later, later))
    assert box.make(*args).returncode == 0
    assert box.apt_calls() == ["venv", NPM_CI, NPM_BUILD, NPM_CI, NPM_BUILD]


def test_web_and_player_dependencies_are_debian_packages() -> None:
    assert {"nodejs", "chromium"} <= set(deb_packages())


@pytest.mark.parametrize("npm", [True, False])
def test_npm_is_installed_only_when_the_command_is_missing(tmp_path: Path, npm: bool) -> None:
    """NodeSource's nodejs brings npm (and conflicts with Debian's npm package): what counts
    is the `npm` command, not the package."""
    box = machine(
        tmp_path,
        uid=0,
        sudo=False,
        pythons={"python3": NEW},
        installed=tuple(deb_packages()),
        npm=npm,
    )
    done = box.make("system-deps")
    assert done.returncode == 0, done.stderr
    expected = (
        [] if npm else ["uid=0 update -qq", "uid=0 install -y -qq --no-install-recommends npm"]
    )
    assert box.apt_calls() == expected
