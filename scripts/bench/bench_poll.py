"""Polling at scale: the real Poller + dcgm parsing over `gpu-console simulate --nodes N`, then Prometheus on
the same targets for the same time, and the CPU ratio of the two; or, with --app, the whole app.

    .venv/bin/python scripts/bench/bench_poll.py [--nodes 1000] [--duration 60] [--interval 1.0] [--no-prometheus]
        [--sim-refresh S] [--sim-nice N] [--app [--settle S]]

Prints: polls/s, % of polls on time (PollerStats.on_time_polls / polls), p50/p99 poll latency, CPU of this
process (the poller: everything but a sleeping main thread) as % of one core, its peak RSS, the simulator's
CPU, then Prometheus' CPU (from /proc/<pid>/stat) over the same duration and the ratio poller / Prometheus.
--sim-refresh is how often the simulated exporters collect new values (dcgm-exporter's -c: 30 s by default);
1 makes every payload new every second, the worst case.

--app runs the real main window (offscreen) in this process and its monitoring worker (poller, incident engine,
store, rollup, notifier) in the process it spawns, over the same fleet and, after --settle seconds (default 15;
--settle 0 measures start-up), prints polls/s, % on time, the CPU of the window's process and of the worker, the
GUI thread's stalls (gaps of a 10 ms timer), both peak RSS, the window process's garbage collector runs and time,
and its CPU by thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from console.config.inventory import parse_inventory  # noqa: E402
from console.live.startup import tune_garbage_collector  # noqa: E402
from console.polling.poller import Poller  # noqa: E402
from console.samples.results import PollResult  # noqa: E402
from console.sources import make_source  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_cpu_seconds(stat: Path) -> float:
    """utime + stime from a /proc stat file (fields 14 and 15; split after the command name, which may hold spaces)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each of this process's threads, by thread name (from /proc/self/task/*/stat)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            seconds = stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "other threads")
        out[name] = out.get(name, 0.0) + seconds
    return out


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_simulator(nodes: int, faults: str, refresh: float) -> tuple[subprocess.Popen[str], str]:
    console = Path(sys.executable).with_name("gpu-console")
    process = subprocess.Popen(
        [
            *[str(console), "simulate", "--nodes", str(nodes), "--listen", "127.0.0.1:0"],
            "--faults",
            faults,
            "--refresh",
            str(refresh),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.5)[0]:
            match = re.search(r"at (http://\S+?)/? ", process.stdout.readline())
            if match:
                return process, match.group(1)
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit("gpu-console simulate did not start")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bench_poller(base: str, duration: float, interval: float, simulator_pid: int) -> float:
    fleet = parse_inventory(fetch(f"{base}/inventory.toml").decode(), f"{base}/inventory.toml")
    if interval != 1.0:
        import dataclasses

        fleet = dataclasses.replace(
            fleet, sites=tuple(dataclasses.replace(s, interval_s=interval) for s in fleet.sites)
        )
    gpus = 0
    lock = threading.Lock()

    def on_result(result: PollResult) -> None:
        nonlocal gpus
        if result.sample is not None:
            with lock:
                gpus += len(result.sample.gpus)

    poller = Poller(fleet, make_source, on_result, seed=1)
    cpu0, sim0, t0 = own_cpu_seconds(), cpu_seconds(simulator_pid), time.monotonic()
    poller.start()
    time.sleep(duration)
    cpu1, sim1, t1 = own_cpu_seconds(), cpu_seconds(simulator_pid), time.monotonic()
    poller.stop()
    stats = poller.stats
    wall = t1 - t0
    poller_cpu = (cpu1 - cpu0) / wall * 100.0
    latencies = list(stats.latencies_s)
    print(f"poller: {len(fleet.nodes)} dcgm nodes ({gpus / max(stats.ok_polls, 1):.0f} GPUs each) every {interval:g} s")
    print(f"  polls/s            {stats.polls / wall:8.1f}   (ok {stats.ok_polls}, failed {stats.failed_polls})")
    print(f"  on time            {100.0 * stats.on_time_polls / max(stats.polls, 1):8.2f} %")
    print(
        f"  latency p50 / p99  {percentile(latencies, 0.5) * 1000:8.1f} / {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    per_poll_us = (cpu1 - cpu0) / max(stats.polls, 1) * 1e6
    print(f"  CPU (this process) {poller_cpu:8.1f} % of one core  ({per_poll_us:.0f} us/poll)")
    print(f"  peak RSS           {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB")
    print(f"  simulator CPU      {(sim1 - sim0) / wall * 100.0:8.1f} % of one core")
    return poller_cpu


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_app(base: str, duration: float, simulator_pid: int, settle_s: float) -> float:
    """The whole app: the real main window (offscreen) here, its monitoring worker in the process it spawns."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from widgets.app import build_app

    fleet = parse_inventory(fetch(f"{base}/inventory.toml").decode(), f"{base}/inventory.toml")
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    gaps: list[float] = []
    clock = QElapsedTimer()
    ticker = QTimer()
    ticker.setInterval(10)

    def tick() -> None:
        gaps.append(clock.nsecsElapsed() / 1e6)
        clock.restart()

    ticker.timeout.connect(tick)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as work:
        app = build_app(fleet, Path(work) / "incidents.sqlite3", seed=1)
        app.start()
        app.window.show()
        settle = time.monotonic() + settle_s  # start-up (first full parses, incidents opening) is not steady state
        while time.monotonic() < settle:
            qt_app.processEvents()
            time.sleep(0.005)
        worker = app.monitor.pid
        assert worker is not None
        polls0, on_time0 = app.monitor.counters.polls, app.monitor.counters.on_time_polls
        gc_time = [0.0, 0.0, 0.0]
        gc_count = [0, 0, 0]
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                gc_time[info["generation"]] += time.perf_counter() - gc_started[0]
                gc_count[info["generation"]] += 1

        gc.callbacks.append(on_gc)
        cpu0, sim0, t0 = own_cpu_seconds(), cpu_seconds(simulator_pid), time.monotonic()
        worker0 = cpu_seconds(worker)
        threads0 = thread_cpu_seconds()
        clock.start()
        ticker.start()
        QTimer.singleShot(int(duration * 1000), qt_app.quit)
        qt_app.exec()
        ticker.stop()
        gc.callbacks.remove(on_gc)
        cpu1, sim1, t1 = own_cpu_seconds(), cpu_seconds(simulator_pid), time.monotonic()
        worker1 = cpu_seconds(worker)
        worker_rss = peak_rss_mib(worker)
        threads1 = thread_cpu_seconds()
        counters = app.monitor.counters
        polls, on_time = counters.polls - polls0, counters.on_time_polls - on_time0
        gpus = app.window.state.gpu_count
        app.shutdown()
    wall = t1 - t0
    gui_cpu = (cpu1 - cpu0) / wall * 100.0
    worker_cpu = (worker1 - worker0) / wall * 100.0
    print(f"whole app (window + monitoring worker): {len(fleet.nodes)} dcgm nodes, {gpus} GPUs, {duration:g} s")
    print(f"  polls/s            {polls / wall:8.1f}")
    print(f"  on time            {100.0 * on_time / max(polls, 1):8.2f} %")
    per_poll = (cpu1 - cpu0 + worker1 - worker0) / max(polls, 1) * 1e6
    print(f"  CPU (both)         {gui_cpu + worker_cpu:8.1f} % of one core  ({per_poll:.0f} us/poll)")
    print(f"  CPU (window)       {gui_cpu:8.1f} % of one core")
    print(f"  CPU (worker)       {worker_cpu:8.1f} % of one core")
    ordered = sorted(gaps)
    p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
    p50 = ordered[int(0.5 * (len(ordered) - 1))] if ordered else 0.0
    print(
        f"  GUI stalls         longest {max(gaps, default=0.0):.0f} ms, p99 {p99:.0f} ms, p50 {p50:.1f} ms, "
        f"{sum(1 for g in gaps if g > 100)} over 100 ms (gaps of a 10 ms timer)"
    )
    print(f"  peak RSS (window)  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB")
    print(f"  peak RSS (worker)  {worker_rss:8.1f} MiB")
    print(
        "  garbage collector  " + ", ".join(f"gen{g}: {gc_count[g]} runs {gc_time[g] * 1000:.0f} ms" for g in range(3))
    )
    shares = {name: (threads1[name] - threads0.get(name, 0.0)) / wall * 100.0 for name in threads1}
    print("  window by thread   " + ", ".join(f"{n} {v:.0f} %" for n, v in sorted(shares.items(), key=lambda i: -i[1])))
    print(f"  simulator CPU      {(sim1 - sim0) / wall * 100.0:8.1f} % of one core")
    return gui_cpu + worker_cpu


def bench_prometheus(base: str, duration: float, interval: float, work: Path) -> float | None:
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus: not installed (Debian package prometheus); skipped")
        return None
    targets = work / "targets.json"
    targets.write_bytes(fetch(f"{base}/prometheus/targets"))
    count = len(json.loads(targets.read_text()))
    config = work / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {interval:g}s\n  scrape_timeout: {interval:g}s\n"
        f"scrape_configs:\n  - job_name: simulated\n    file_sd_configs:\n      - files: ['{targets}']\n"
    )
    port = 19090 + os.getpid() % 1000
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query?query="
    try:
        deadline = time.monotonic() + 60
        up = 0
        while time.monotonic() < deadline and up < count:
            time.sleep(1.0)
            try:
                result = json.loads(fetch(api + "sum(up)"))["data"]["result"]
                up = int(float(result[0]["value"][1])) if result else 0
            except OSError:
                continue
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(duration)
        cpu1, t1 = cpu_seconds(process.pid), time.monotonic()
        scraped = json.loads(fetch(api + "sum(scrape_samples_scraped)"))["data"]["result"]
        samples = float(scraped[0]["value"][1]) / interval if scraped else float("nan")
        prom_cpu = (cpu1 - cpu0) / (t1 - t0) * 100.0
        print(f"prometheus: {up} of {count} targets up, scrape every {interval:g} s")
        print(f"  CPU                {prom_cpu:8.1f} % of one core   ({samples:,.0f} samples/s scraped)")
        return prom_cpu
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per measurement (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll/scrape interval in seconds")
    parser.add_argument("--faults", default="all", help="simulate --faults (default all, as the demo fleet)")
    parser.add_argument(
        "--sim-refresh", type=float, default=1.0, help="simulate --refresh: seconds between value updates"
    )
    parser.add_argument("--no-prometheus", action="store_true", help="skip the Prometheus comparison")
    parser.add_argument(
        "--sim-nice",
        type=int,
        default=0,
        help="run the simulator at this nice level: the exporters it stands for run on other machines, and on a "
        "2-core box its CPU competes with the window's",
    )
    parser.add_argument("--settle", type=float, default=15.0, help="--app: seconds to run before measuring")
    parser.add_argument(
        "--app", action="store_true", help="measure the whole app (window, engine, store, rollup), not the poller"
    )
    args = parser.parse_args()
    tune_garbage_collector()  # as the window and `gpu-console poll` do
    simulator, base = start_simulator(args.nodes, args.faults, args.sim_refresh)
    if args.sim_nice:
        os.setpriority(os.PRIO_PROCESS, simulator.pid, args.sim_nice)
    try:
        if args.app:
            bench_app(base, args.duration, simulator.pid, args.settle)
            return 0
        poller_cpu = bench_poller(base, args.duration, args.interval, simulator.pid)
        if not args.no_prometheus:
            with tempfile.TemporaryDirectory(prefix="bench-poll-") as work:
                prom_cpu = bench_prometheus(base, args.duration, args.interval, Path(work))
            if prom_cpu:
                print(f"ratio poller / prometheus CPU: {poller_cpu / prom_cpu:.2f}")
    finally:
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
