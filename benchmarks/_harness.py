"""Shared plumbing of the benchmark scripts: child processes, the peer venv, tables.

Every workload runs in a fresh child process (its own interpreter, its own temporary working
directory) that writes one JSON object with its figures and its peak RSS to a result file.
Our workloads run under the project's interpreter (``_child_ours.py``), the baseline's under
the interpreter of the venv that holds ``flock-core`` 0.5.7 (``_child_peer.py``); the two
``flock`` packages never meet in one process.

Children do not inherit ``PYTHONPATH``. To measure another commit of ours with the same
scripts in the same session, set ``FLOCK_BENCH_SRC`` to that checkout's ``src`` directory
(e.g. ``git archive REV | tar -x -C /tmp/old``, then ``FLOCK_BENCH_SRC=/tmp/old/src``): our
children import flock from there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
OURS_CHILD = HERE / "_child_ours.py"
PEER_CHILD = HERE / "_child_peer.py"

# Variables that change how either framework traces; children start from a clean slate.
TRACE_VARS = (
    "FLOCK_AUTO_TRACE",
    "FLOCK_TRACE_FILE",
    "FLOCK_TRACE_DB",
    "FLOCK_TRACE_FLUSH_INTERVAL",
    "FLOCK_AUTO_WORKFLOW_TRACE",
    "FLOCK_TRACE_SERVICES",
    "FLOCK_TRACE_IGNORE",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "FLOCK_OUTPUT",
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("FLOCK_PEER_PYTHON"),
        help="interpreter of a venv with flock-core 0.5.7 (default: $FLOCK_PEER_PYTHON, else "
        ".peer-venv/bin/python in the repo, installed via ../shared/peer/install-peer.sh)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the baseline framework")
    parser.add_argument("--json", type=Path, help="also write all figures to this JSON file")


def ours_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def peer_python(args: argparse.Namespace) -> str | None:
    """The baseline's interpreter, installing it into ``.peer-venv`` when missing."""
    if args.no_peer:
        return None
    if args.peer_python:
        return str(args.peer_python)
    venv = REPO / ".peer-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        script = SHARED / "peer" / "install-peer.sh"
        print(f"installing flock-core 0.5.7 into {venv} ({script}) ...", file=sys.stderr)
        subprocess.run(["bash", str(script), str(venv)], cwd=REPO, check=True)
    return str(python)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TRACE_VARS}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def run_child(
    python: str,
    script: Path,
    workload: str,
    params: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run one workload in a fresh process in a fresh temp dir; its JSON result (or an error)."""
    with tempfile.TemporaryDirectory(prefix="flock-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        work = Path(tmp) / "work"
        work.mkdir()
        stderr_path = Path(tmp) / "stderr.txt"
        env = dict(env or {})
        if script == OURS_CHILD and os.environ.get("FLOCK_BENCH_SRC"):
            env["PYTHONPATH"] = os.environ["FLOCK_BENCH_SRC"]
        started = time.perf_counter()
        with open(stderr_path, "wb") as stderr:
            try:
                proc = subprocess.run(
                    [python, str(script), workload, json.dumps(params), str(result_path)],
                    cwd=work,
                    env=child_env(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # the peer prints a banner per publish
                    stderr=stderr,
                    timeout=timeout,
                    check=False,
                )
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        wall = time.perf_counter() - started
        if result_path.exists():
            result: dict[str, Any] = json.loads(result_path.read_text())
            result["process_wall_s"] = wall
            return result
        tail = stderr_path.read_text(errors="replace")[-1500:]
        reason = f"timed out after {timeout:.0f}s" if code is None else f"exit code {code}"
        return {"error": f"{workload} {reason}", "stderr_tail": tail, "process_wall_s": wall}


def best_of(runs: Sequence[dict[str, Any]], key: str, *, higher: bool = True) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r and r.get(key) is not None]
    if not ok:
        return runs[0]
    return max(ok, key=lambda r: r[key]) if higher else min(ok, key=lambda r: r[key])


# Formatting -------------------------------------------------------------------


def fmt(value: Any, digits: int | None = None) -> str:
    """Thousands separators; `digits` decimals (default: none from 100 up, else 2)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float | int):
        if digits is None:
            digits = 0 if abs(value) >= 100 or isinstance(value, int) else 2
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(ours: Any, peer: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(peer, int | float) or not peer:
        return "-"
    r = ours / peer
    return f"{r:,.1f}x" if r >= 10 else f"{r:,.2f}x"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")


def machine_note() -> str:
    return (
        f"{platform.node()} · {platform.platform()} · Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · {time.strftime('%Y-%m-%d %H:%M %Z')}"
        + (
            f" · ours from {os.environ['FLOCK_BENCH_SRC']}"
            if os.environ.get("FLOCK_BENCH_SRC")
            else ""
        )
    )


def report_errors(results: dict[str, Any]) -> None:
    for name, result in results.items():
        if isinstance(result, dict) and "error" in result:
            print(
                f"\n!! {name}: {result['error']}\n{result.get('stderr_tail', '')}", file=sys.stderr
            )


def dump_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))
