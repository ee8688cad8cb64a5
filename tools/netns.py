"""Two hosts on one machine: network namespaces joined by a veth pair, each with its own address on a
private network, for tests of a mesh over several hosts. Needs root and iproute2's `ip`; `unusable()` says why not.

Only the namespaces get addresses: the machine's own network is never touched. A process started in a
namespace (`run_in`) keeps it alive after `ip netns del`, so stop what runs there before closing the pair.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from types import TracebackType

NETWORK = "10.213.7"  # /24: the hosts are .1, .2, ...


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unusable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"mtprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as error:
        return f"ip netns add failed: {getattr(error, 'stderr', '') or error}"
    _ip("netns", "del", probe)
    return None


class HostPair:
    """Two namespaces named uniquely for this run, host i at NETWORK.i+1, joined by a veth pair; loopback up in each."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.names = [f"mt{tag}a", f"mt{tag}b"]
        self.addresses = [f"{NETWORK}.1", f"{NETWORK}.2"]

    def __enter__(self) -> HostPair:
        try:
            for name in self.names:
                _ip("netns", "add", name)
                _ip("-n", name, "link", "set", "lo", "up")
            first, second = self.names
            _ip("link", "add", f"{first}v", "netns", first, "type", "veth",
                "peer", "name", f"{second}v", "netns", second)
            for name, address in zip(self.names, self.addresses, strict=True):
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", f"{name}v")
                _ip("-n", name, "link", "set", f"{name}v", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Deletes the namespaces (their veth ends go with them)."""
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)

    def run_in(self, host: int) -> list[str]:
        """The command prefix that runs a program on host `host` (0 or 1)."""
        return ["ip", "netns", "exec", self.names[host]]
