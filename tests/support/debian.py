"""Debian's own programs that tests drive (Chromium, Prometheus), installed with apt-get where missing: the
tests run as root on a fresh Debian machine, and nothing else would install them."""
from __future__ import annotations

import shutil
import subprocess

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # dpkg wants sbin


def debian_program(program: str, package: str | None = None, recommends: bool = True) -> str:
    """The path of `program`, after installing `package` (by default the program's name) if it is missing.
    `recommends=False` leaves out what the package only recommends (Prometheus': a node exporter)."""
    found = shutil.which(program)
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=600, env=APT_ENV)
        options = [] if recommends else ["--no-install-recommends"]
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", *options, package or program],
                                   capture_output=True, text=True, timeout=900, env=APT_ENV)
        found = shutil.which(program)
        assert found, f"{program} is needed and could not be installed: {installed.stderr[-500:]}"
    return found
