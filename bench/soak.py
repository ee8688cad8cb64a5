"""Soak: the whole mesh at a high replay speed for a bounded period, every service's resident memory and
open file descriptors sampled every few seconds; a service that keeps growing after its warm-up fails
the stated bound.

The mesh runs in its own temp MESH_HOME with the default strategies and the allocator's validations and
optimisations on (at 200 candles/s its 6-hourly validation comes every 1.8 s of wall time, so the
research workflows run back to back: the heaviest the allocator ever gets). Its validation windows are
one and two days and its optimisation window one day (WINDOWS), full within the warm-up: with the default
7/30/90-day windows a validation holds every bar since the start of the 30 bundled days, so its working set
rises with the replay until the longest window is full (measured: +12 MB over 180 s at 200 candles/s, and
+0.4 MB with these windows). That is the window's size, bounded by it (90 days x symbols of bars), not a leak;
with full windows, any growth is one. Growth is measured after
the warm-up, comparing the later half of the samples with the earlier half: memory by its peak (a working
set that comes and goes, a validation's, peaks in both halves: no growth), descriptors by their floor (an
optimisation's worker pool holds pipes while it runs; a leaked descriptor raises the floor).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tools.localmesh import LocalMesh

SPEED = 200.0  # candles per second per symbol: the 30 bundled days last 3.6 minutes
WINDOWS = {"MESH_VALIDATION_WINDOWS_MIN": "1440,2880", "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4",
           "MESH_OPTIMIZE_WINDOW_MIN": "1440"}  # full after 2 market days: 14 s at SPEED
SECONDS = 180.0
EVERY_S = 3.0
WARMUP_S = 45.0  # first validations and the first optimisation have run: caches, imports and pools warm
# Python keeps freed memory in its arenas, so a transient peak (a validation's bars over a longer window
# than before) can stay resident; 10 MB is well above that noise and well below the 50 MB the issue saw.
RSS_GROWTH_BOUND_MB = 10.0
# The floor of descriptors should not move at all; 2 allows for a fork's database or a /metrics scrape
# open at the very sample that set the floor.
FD_GROWTH_BOUND = 2


def rss_mb(pid: int) -> float | None:
    """VmRSS of the process, in MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def growth(values: list[float], level: Callable[[list[float]], float]) -> float:
    """`level` (max: the peak; min: the floor) of the later half over that of the earlier half."""
    if len(values) < 2:
        return 0.0
    half = len(values) // 2
    return level(values[half:]) - level(values[:half])


def figures(samples: list[tuple[float, float, int]]) -> dict:
    """One service's figures from its (elapsed s, RSS MB, fds) samples."""
    rss = [r for _, r, _ in samples]
    fds = [f for _, _, f in samples]
    settled = [(r, f) for t, r, f in samples if t >= WARMUP_S]
    rss_growth = growth([r for r, _ in settled], max)
    # the floor: descriptors a pool or a fork holds for a while come and go; a leaked one raises the floor
    fd_growth = growth([f for _, f in settled], min)
    return {"rss_mb": {"first": round(rss[0], 1), "max": round(max(rss), 1), "last": round(rss[-1], 1),
                       "growth_after_warmup": round(rss_growth, 1)},
            "fds": {"first": fds[0], "max": max(fds), "last": fds[-1], "growth_after_warmup": fd_growth},
            "samples": len(samples),
            "within_bound": rss_growth <= RSS_GROWTH_BOUND_MB and fd_growth <= FD_GROWTH_BOUND}


def sample_mesh(mesh: LocalMesh, seconds: float, progress: bool) -> tuple[dict[str, list], dict[str, int]]:
    """Samples per program (a program restarted mid-run is counted, and sampled from its new process on)."""
    series: dict[str, list[tuple[float, float, int]]] = {}
    restarts: dict[str, int] = {}
    pids: dict[str, int] = {}
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        for name, info in mesh.supervisor.processes().items():
            pid = info.get("pid") or 0
            if not pid:
                continue
            if pids.setdefault(name, pid) != pid:
                pids[name], restarts[name] = pid, restarts.get(name, 0) + 1
            rss, fds = rss_mb(pid), open_fds(pid)
            if rss is not None and fds is not None:
                series.setdefault(name, []).append((elapsed, rss, fds))
        if progress:
            worst = max(series.items(), key=lambda kv: kv[1][-1][1], default=(None, [(0, 0.0, 0)]))
            print(f"  {elapsed:5.0f}s: largest {worst[0]} {worst[1][-1][1]:.1f} MB", file=sys.stderr, flush=True)
        time.sleep(EVERY_S)
    return series, restarts


def run_soak_suite(progress: bool = True, seconds: float = SECONDS, speed: float = SPEED) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshsoak-") as tmp:
        mesh = LocalMesh(Path(tmp) / "mesh", {"MESH_REPLAY_SPEED": str(speed), "MESH_LOG_LEVEL": "WARNING", **WINDOWS})
        if progress:
            print(f"soak: a mesh in {mesh.home} at {speed:g} candles/s, sampled every {EVERY_S:g}s for "
                  f"{seconds:g}s ...", file=sys.stderr, flush=True)
        mesh.start()
        try:
            series, restarts = sample_mesh(mesh, seconds, progress)
        finally:
            mesh.stop()
    services = {name: figures(samples) for name, samples in sorted(series.items())}
    return {"services": services, "restarts": restarts,
            "within_bound": all(s["within_bound"] for s in services.values()) and not restarts,
            "bounds": {"rss_growth_mb": RSS_GROWTH_BOUND_MB, "fd_growth": FD_GROWTH_BOUND},
            "seconds": seconds, "warmup_s": WARMUP_S, "every_s": EVERY_S, "replay_speed_candles_per_s": speed,
            "windows": WINDOWS}


if __name__ == "__main__":
    import json

    print(json.dumps(run_soak_suite(), indent=2))
