"""Run a command (CI: `make test`) with a hang watchdog; standard library only.

Every fast test finishes in seconds and pytest-timeout ends any test that runs past 300 s, so a run
that goes on for `--hang-s` seconds, or a run in which pytest-timeout fired, is stuck rather than
slow. The watchdog then prints what every process is doing (state, kernel wait channel, Python stacks
via py-spy when the venv has it), stops the whole process group, and runs the command once more.
A test that fails, or a second hang, fails CI as usual: a retry is for a stuck run, never for a red one.

    python3 .ci/watchdog.py --hang-s 1200 --attempts 2 -- make test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

TIMEOUT_MARKERS = ("+++++ Timeout +++++", "Timeout (>")  # pytest-timeout: thread / signal method


def diagnose(pgid: int) -> None:
    print(f"\n[watchdog] process states (session {pgid}):", flush=True)
    subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:32,etime,pcpu,rss,args", "--forest", "--sid", str(pgid)])
    print("[watchdog] busiest processes on the machine:", flush=True)
    subprocess.run("ps -eo pid,stat,pcpu,rss,comm --sort=-pcpu | head -8", shell=True, check=False)
    for cmd in (["free", "-m"], ["df", "-h", "."], ["uptime"]):
        subprocess.run(cmd, check=False)
    py_spy = shutil.which("py-spy", path=os.path.join(os.getcwd(), ".venv", "bin")) or shutil.which("py-spy")
    pids = subprocess.run(["pgrep", "-g", str(pgid), "-f", "python"], capture_output=True, text=True).stdout
    for pid in pids.split():
        print(f"\n[watchdog] /proc/{pid}/status state and Python stacks:", flush=True)
        try:
            with open(f"/proc/{pid}/status") as f:
                print(
                    "".join(line for line in f if line.startswith(("State", "Threads", "VmRSS"))), flush=True
                )
        except OSError as e:
            print(f"  {e}", flush=True)
        if py_spy:
            subprocess.run([py_spy, "dump", "--pid", pid], check=False, timeout=30)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after 20 s."""
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            if sig == signal.SIGTERM:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # children that outlived make
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def run_once(cmd: list[str], hang_s: float) -> tuple[int, bool]:
    """Returns (exit code, hung)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, bufsize=0
    )
    saw_timeout = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        tail = b""
        fd = proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            tail = (tail + chunk)[-4096:]
            if any(m.encode() in tail for m in TIMEOUT_MARKERS):
                saw_timeout.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    t0 = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - t0 > hang_s:
            print(f"\n[watchdog] `{' '.join(cmd)}` still running after {hang_s:.0f} s: stuck", flush=True)
            diagnose(proc.pid)
            stop_group(proc)
            reader.join(timeout=5)
            return proc.returncode, True
        time.sleep(1.0)
    reader.join(timeout=10)
    if proc.returncode != 0 and saw_timeout.is_set():
        print("\n[watchdog] pytest-timeout fired: a test hung", flush=True)
        return proc.returncode, True
    return proc.returncode, False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hang-s", type=float, default=1200.0, help="a run longer than this is stuck")
    p.add_argument("--attempts", type=int, default=2, help="runs allowed when a run is stuck")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given")
    rc = 1
    for attempt in range(1, args.attempts + 1):
        t0 = time.monotonic()
        rc, hung = run_once(cmd, args.hang_s)
        print(f"[watchdog] attempt {attempt}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if not hung:
            return rc
        if attempt < args.attempts:
            print("[watchdog] running it once more", flush=True)
    return 128 - rc if rc < 0 else (rc or 1)


if __name__ == "__main__":
    sys.exit(main())
