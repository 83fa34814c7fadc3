"""Benchmark trackpixel's GET /p.gif against nginx's empty_gif, then check durability.

One run starts Debian's nginx (one worker, ``empty_gif``) and ``trackpixel serve`` on free
127.0.0.1 ports and drives each with the same wrk command and Lua script (bench/pixel_hits.lua).
It then stops trackpixel with SIGINT and compares the rows in ``events`` plus ``rejected_hits``
with the 2xx responses wrk counted. It prints a Markdown summary for BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python bench/pixel_bench.py [--duration 15]``.
Every process it starts runs in its own session and is stopped on exit, also on error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "pixel_hits.lua"
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf.template"
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
RESULT_MARKER = "PIXEL_BENCH_RESULT "
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 300.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """CPU seconds used during one wrk run, from /proc and getrusage."""

    server: float  # the server's request path: nginx, or trackpixel without its processor
    processor: float  # trackpixel's processor process; 0 for nginx
    wrk: float
    other: float  # every other process on the machine, from /proc/stat minus the above
    wall: float


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_us: int
    p99_us: int
    output: str
    cpu: CpuUse | None = None

    @property
    def requests_per_s(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def acknowledged(self) -> int:
        return self.requests - self.non_2xx


class Processes:
    """Child processes started by the benchmark; ``stop_all`` ends each one's session."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            _end_session(process, signal.SIGTERM, timeout=10.0)
            _end_session(process, signal.SIGKILL, timeout=5.0)


def _end_session(process: subprocess.Popen[bytes], signum: int, timeout: float) -> None:
    """Send ``signum`` to the session that ``process`` leads, if any member is still alive."""
    if not _session_alive(process):
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _session_alive(process):
        time.sleep(0.1)


def _session_alive(process: subprocess.Popen[bytes]) -> bool:
    """Return True while the process or any process in its session (its children) runs."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def session_members(leader: subprocess.Popen[bytes]) -> list[int]:
    """Return the ids of the processes in the session that ``leader`` started."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == leader.pid:  # field 6 of /proc/PID/stat, the session id
            members.append(int(entry.name))
    return members


def process_cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of ``pid``, or 0.0 once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime, fields 14-15


def is_processor(pid: int) -> bool:
    """Tell trackpixel's processor apart: serve starts it with multiprocessing's spawn method."""
    try:
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def machine_busy_seconds() -> float:
    """Return the CPU seconds all CPUs have spent outside idle and iowait since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, minus idle and iowait
    return busy / CLOCK_TICKS


class CpuMeter:
    """Measure the CPU time of a server's session, of wrk and of everything else."""

    def __init__(self, server: subprocess.Popen[bytes]) -> None:
        self._server = server
        self._pids = session_members(server)
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, dict[int, float], float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.monotonic(), {pid: process_cpu_seconds(pid) for pid in self._pids},
                children.ru_utime + children.ru_stime, machine_busy_seconds())

    def stop(self) -> CpuUse:
        end = self._snapshot()
        server = processor = 0.0
        for pid, before in self._start[1].items():
            used = end[1][pid] - before if end[1][pid] else 0.0
            if is_processor(pid):
                processor += used
            else:
                server += used
        wrk = end[2] - self._start[2]
        busy = end[3] - self._start[3]
        return CpuUse(server=server, processor=processor, wrk=wrk,
                      other=max(0.0, busy - server - processor - wrk),
                      wall=end[0] - self._start[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{shlex.join(map(str, process.args))} exited with code "  # type: ignore[arg-type]
                               f"{process.returncode} "
                               f"before listening on port {port}; log:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f} s; "
                       f"log:\n{log_path.read_text()}")


def pinned(argv: list[str], cpus: str) -> list[str]:
    """Prefix ``argv`` with taskset so it and its children run only on ``cpus``."""
    if not cpus:
        return argv
    return ["taskset", "-c", cpus, *argv]


def run_wrk(args: argparse.Namespace, url: str, site_id: str,
            server: subprocess.Popen[bytes]) -> WrkResult:
    argv = pinned([WRK, "--threads", str(args.threads), "--connections", str(args.connections),
                   "--duration", f"{args.duration}s", "--timeout", "10s", "--latency",
                   "--script", str(LUA_SCRIPT), url, "--", site_id, str(args.seed)],
                  args.wrk_cpus)
    print(f"$ {shlex.join(argv)}", flush=True)
    meter = CpuMeter(server)
    completed = subprocess.run(argv, capture_output=True, text=True, check=False,
                               timeout=args.duration + 60)
    cpu = meter.stop()
    print(completed.stdout, end="", flush=True)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed with code {completed.returncode}: {completed.stderr}")
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            data = json.loads(line[len(RESULT_MARKER):])
            break
    else:
        raise RuntimeError(f"wrk output has no {RESULT_MARKER.strip()} line; stderr: "
                           f"{completed.stderr}")
    return WrkResult(
        requests=data["requests"], duration_us=data["duration_us"], non_2xx=data["non_2xx"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"],
        timeouts=data["timeouts"], p50_us=data["p50_us"], p99_us=data["p99_us"],
        output=completed.stdout, cpu=cpu,
    )


def start_nginx(processes: Processes, workdir: Path, port: int, cpus: str
                ) -> subprocess.Popen[bytes]:
    prefix = workdir / "nginx"
    prefix.mkdir()
    config = string.Template(NGINX_TEMPLATE.read_text()).substitute(prefix=prefix, port=port)
    config_path = prefix / "nginx.conf"
    config_path.write_text(config)
    log_path = workdir / "nginx.out"
    process = processes.start(pinned([NGINX, "-p", str(prefix), "-c", str(config_path)], cpus),
                              log_path)
    wait_for_port(port, process, log_path)
    return process


def trackpixel_command() -> list[str]:
    venv_script = Path(sys.executable).with_name("trackpixel")
    if venv_script.exists():
        return [str(venv_script)]
    return [sys.executable, "-m", "trackpixel"]


def add_site(data_dir: Path) -> str:
    completed = subprocess.run(
        [*trackpixel_command(), "sites", "add", "localhost", "--data-dir", str(data_dir),
         "--format", "json"],
        capture_output=True, text=True, check=False, timeout=60)
    if completed.returncode != 0:
        raise RuntimeError(f"trackpixel sites add failed with code {completed.returncode}: "
                           f"{completed.stderr or completed.stdout}")
    site = json.loads(completed.stdout)
    if isinstance(site, list):
        site = site[0]
    return str(site["id"])


def start_trackpixel(processes: Processes, workdir: Path, data_dir: Path, port: int,
                     args: argparse.Namespace) -> subprocess.Popen[bytes]:
    log_path = workdir / "trackpixel.out"
    argv = [*trackpixel_command(), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(args.workers)]
    process = processes.start(pinned(argv, args.server_cpus), log_path)
    wait_for_port(port, process, log_path)
    if args.processor_cpus:
        for pid in session_members(process):
            if is_processor(pid):
                subprocess.run(["taskset", "--all-tasks", "--cpu-list", "--pid",
                                args.processor_cpus, str(pid)],
                               check=True, stdout=subprocess.DEVNULL)
    return process


def stop_trackpixel(process: subprocess.Popen[bytes]) -> float:
    """Send SIGINT to the serve process and wait for its whole session; return the seconds."""
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    deadline = started + STOP_TIMEOUT_S
    while _session_alive(process):
        if time.monotonic() > deadline:
            raise RuntimeError(f"trackpixel serve did not stop within {STOP_TIMEOUT_S:.0f} s "
                               "of SIGINT")
        time.sleep(0.2)
    return time.monotonic() - started


def count_stored(data_dir: Path) -> dict[str, int]:
    """Count stored rows, plus rows still waiting in spool files if the processor left any."""
    counts: dict[str, int] = {}
    with sqlite3.connect(f"file:{data_dir / 'trackpixel.db'}?mode=ro", uri=True) as conn:
        counts["events"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        counts["rejected_hits"] = conn.execute("SELECT count(*) FROM rejected_hits").fetchone()[0]
        reasons = conn.execute(
            "SELECT reason, count(*) FROM rejected_hits GROUP BY reason").fetchall()
    counts.update({f"rejected:{reason}": count for reason, count in reasons})
    unprocessed = 0
    for spool in (data_dir / "spool").glob("*.db"):
        with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as conn:
            unprocessed += conn.execute("SELECT count(*) FROM hits").fetchone()[0]
    counts["spool_rows_left"] = unprocessed
    return counts


def check_pixel(port: int) -> None:
    """Fail early unless the server returns a 200 GIF for a pixel request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /p.gif?s=check HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    if not response.startswith(b"HTTP/1.1 200") or b"GIF89a" not in response:
        raise RuntimeError(f"127.0.0.1:{port}/p.gif did not return a 200 GIF: {response[:200]!r}")


def machine_description() -> dict[str, str]:
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram_gib = "unknown"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram_gib = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True,
                                   check=False).stderr.strip()
    wrk_version = subprocess.run([WRK, "--version"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[0]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "ram": ram_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx_version.removeprefix("nginx version: "),
        "wrk": wrk_version.split(" Copyright")[0],
    }


def format_us(microseconds: int) -> str:
    if microseconds >= 1000:
        return f"{microseconds / 1000:.2f} ms"
    return f"{microseconds} µs"


def markdown_report(args: argparse.Namespace, machine: dict[str, str], nginx: WrkResult,
                    trackpixel: WrkResult, stored: dict[str, int], stop_seconds: float) -> str:
    ratio = trackpixel.requests_per_s / nginx.requests_per_s
    total_stored = stored["events"] + stored["rejected_hits"]
    rejected = ", ".join(f"{name.split(':', 1)[1]} {count}" for name, count in stored.items()
                         if name.startswith("rejected:")) or "none"
    command = shlex.join([".venv/bin/python", "bench/pixel_bench.py", *sys.argv[1:]])
    lines = [
        "```",
        f"$ {command}",
        "```",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['ram']} RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}",
        f"- Tools: nginx {machine['nginx']}, {machine['wrk']}",
        f"- Load: wrk {args.threads} thread(s), {args.connections} connections, "
        f"{args.duration} s per target, keep-alive; wrk on CPUs `{args.wrk_cpus or 'any'}`, "
        f"servers on CPUs `{args.server_cpus or 'any'}`; trackpixel {args.workers} worker(s), "
        f"its processor process on CPUs `{args.processor_cpus or args.server_cpus or 'any'}`",
        "",
        "| Target | Requests/s | p50 | p99 | Non-2xx | Socket errors | Server CPU µs/request "
        "| Processor CPU µs/request | Other processes' load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in (("nginx `empty_gif`", nginx), ("trackpixel `/p.gif`", trackpixel)):
        cpu = result.cpu
        assert cpu is not None
        per_request = 1e6 / max(result.requests, 1)
        lines.append(f"| {name} | {result.requests_per_s:,.0f} | {format_us(result.p50_us)} | "
                     f"{format_us(result.p99_us)} | {result.non_2xx} | "
                     f"{result.socket_errors + result.timeouts} | "
                     f"{cpu.server * per_request:.1f} | {cpu.processor * per_request:.1f} | "
                     f"{cpu.other / cpu.wall:.2f} CPUs |")
    lines += [
        "",
        f"- trackpixel / nginx requests/s: **{ratio:.3f}x**",
        "- Server CPU is the user plus system time of the server's processes during the wrk "
        "run (for trackpixel without its processor); other processes' load is the machine's "
        "busy time minus the servers and wrk, in CPUs.",
        f"- Acknowledged (2xx) by trackpixel: {trackpixel.acknowledged:,}; stored after SIGINT "
        f"and processor drain ({stop_seconds:.1f} s): {total_stored:,} "
        f"(events {stored['events']:,}, rejected_hits {stored['rejected_hits']:,}: {rejected}); "
        f"rows left unprocessed in spools: {stored['spool_rows_left']:,}",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    two_cpus = (os.cpu_count() or 1) >= 2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="wrk run per target, seconds")
    parser.add_argument("--connections", type=int, default=64,
                        help="open wrk connections per target")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="trackpixel collector workers")
    parser.add_argument("--seed", type=int, default=1, help="seed for the Lua request pool")
    parser.add_argument("--wrk-cpus", default="1" if two_cpus else "",
                        help="taskset CPU list for wrk; empty for no pinning (default: 1 on "
                             "machines with two or more CPUs)")
    parser.add_argument("--server-cpus", default="0" if two_cpus else "",
                        help="taskset CPU list for nginx and for trackpixel; empty for no "
                             "pinning (default: 0 on machines with two or more CPUs)")
    parser.add_argument("--processor-cpus", default="1" if two_cpus else "",
                        help="taskset CPU list for trackpixel's processor process, applied "
                             "after start; empty to leave it on --server-cpus (default: 1, "
                             "beside wrk, on machines with two or more CPUs)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory with logs and the data dir")
    return parser.parse_args()


def check_tools(args: argparse.Namespace) -> None:
    missing = [tool for tool in (NGINX, WRK) if not Path(tool).exists()]
    if (args.wrk_cpus or args.server_cpus) and shutil.which("taskset") is None:
        missing.append("taskset")
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: install with "
                         "'apt-get install nginx-light wrk util-linux'")


def main() -> int:
    args = parse_args()
    check_tools(args)
    machine = machine_description()
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="pixel-bench-"))
    try:
        data_dir = workdir / "data"
        site_id = add_site(data_dir)

        nginx_port = free_port()
        nginx_process = start_nginx(processes, workdir, nginx_port, args.server_cpus)
        check_pixel(nginx_port)
        print(f"== nginx empty_gif on 127.0.0.1:{nginx_port}", flush=True)
        nginx = run_wrk(args, f"http://127.0.0.1:{nginx_port}/p.gif", site_id, nginx_process)
        processes.stop_all()

        trackpixel_port = free_port()
        serve = start_trackpixel(processes, workdir, data_dir, trackpixel_port, args)
        check_pixel(trackpixel_port)
        print(f"== trackpixel on 127.0.0.1:{trackpixel_port}, data in {data_dir}", flush=True)
        trackpixel = run_wrk(args, f"http://127.0.0.1:{trackpixel_port}/p.gif", site_id,
                             serve)
        stop_seconds = stop_trackpixel(serve)
        stored = count_stored(data_dir)
    finally:
        processes.stop_all()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    total_stored = stored["events"] + stored["rejected_hits"]
    print()
    print(markdown_report(args, machine, nginx, trackpixel, stored, stop_seconds))
    print()
    # The check pixel request sent before the run counts as one stored, unacknowledged-by-wrk
    # row, and requests in flight when wrk stops may be stored without being counted.
    if total_stored < trackpixel.acknowledged:
        print(f"FAIL: {trackpixel.acknowledged - total_stored} acknowledged hits are missing "
              f"from events and rejected_hits. {stored['spool_rows_left']} rows were still in "
              "spool files, so check the processor's errors in trackpixel.out (run with --keep)",
              file=sys.stderr)
        return 1
    print(f"OK: all {trackpixel.acknowledged:,} acknowledged hits are stored "
          f"({total_stored - trackpixel.acknowledged} more rows: the check request and "
          "requests in flight when wrk stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
