"""Load test of `icdcoder serve` on loopback: N concurrent clients for a fixed time.

    .venv/bin/python benchmarks/load_test.py --model-dir runs/serve_caml/model            # CodiEsp test notes
    .venv/bin/python benchmarks/load_test.py --model-dir runs/serve_syn9000/model --notes runs/syn9000_serve
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000 --clients 8 --duration 10

With --model-dir it starts `icdcoder serve` itself on 127.0.0.1 (a free port) and stops it at the end; with
--url it uses a running server, which must be on a loopback address. Each client is a thread with one
keep-alive HTTP connection that POSTs notes to /v1/code back to back (round robin over the note set, each
client starting at a different note) until the time is up; a warm-up precedes the measured window. The run
is bounded: clients stop sending at the deadline and stop waiting for replies 1 s after it, every request
has a timeout, and the run is abandoned (server killed) if a client overruns by `--grace` seconds.

Reports throughput (requests completed inside the measured window per second = notes/s), latency p50 / p90
/ p99 / max of those requests, errors by kind (a request still in flight at the end is neither), the
server's micro-batching statistics, note sizes and the machine's load; prints a Markdown row and the JSON
result (also to --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ROOT = Path(__file__).resolve().parent.parent


def load_notes(source: str | None, limit: int) -> tuple[str, list[str]]:
    """(description, texts): a prepared dataset's test split, a folder of .txt notes, or CodiEsp test
    (English, the embedded copy) by default."""
    if source is None:
        from icdcoder.data.sources.codiesp import embedded_root

        folder = embedded_root() / "test" / "text_files_en"
        texts = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))[:limit]]
        return "CodiEsp test (English)", texts
    path = Path(source)
    if (path / "stats.json").is_file():
        from icdcoder.data.prepared import PreparedDataset

        ds = PreparedDataset.open(path)
        split = "test" if "test" in ds.splits else ds.splits[0]
        texts = []
        for doc in ds.documents(split):
            texts.append(doc.text)
            if len(texts) >= limit:
                break
        return f"{path.name} ({split})", texts
    texts = [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))[:limit]]
    return path.name, texts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {r.status}")
        return json.loads(body)
    finally:
        conn.close()


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str, int]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "icdcoder",
        "serve",
        str(args.model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--max-queue",
        str(max(512, args.clients * 4)),
        "--log-level",
        "warning",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.micro_batch:
        cmd += ["--micro-batch", str(args.micro_batch)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"the server exited with status {proc.returncode}:\n{err[-2000:]}")
        try:
            get_json("127.0.0.1", port, "/healthz", timeout=2)
            return proc, "127.0.0.1", port
        except (OSError, RuntimeError):
            time.sleep(0.2)
    stop_server(proc)
    raise SystemExit("the server did not start in time")


def _rss_mb(proc: subprocess.Popen[bytes] | None) -> float | None:
    """Resident memory of the server process (Linux /proc), None when it is not ours to read."""
    if proc is None:
        return None
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Client(threading.Thread):
    def __init__(
        self,
        idx: int,
        host: str,
        port: int,
        bodies: list[bytes],
        measure_from: float,
        deadline: float,
        timeout: float,
    ) -> None:
        super().__init__(name=f"client-{idx}", daemon=True)
        self.idx, self.host, self.port = idx, host, port
        self.bodies = bodies
        self.measure_from, self.deadline, self.timeout = measure_from, deadline, timeout
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.done_warmup = 0

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        i = self.idx * 7
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < self.deadline:
            body = self.bodies[i % len(self.bodies)]
            i += 1
            t0 = time.monotonic()
            # Never wait past the deadline (+1 s): a reply after it would not be counted anyway.
            wait = min(self.timeout, max(0.1, self.deadline + 1.0 - t0))
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=wait)
            else:
                conn.timeout = wait
                if conn.sock is not None:
                    conn.sock.settimeout(wait)
            try:
                conn.request("POST", "/v1/code", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and data.startswith(b"{") and b'"codes"' in data
                kind = None if ok else f"HTTP {r.status}"
            except (OSError, http.client.HTTPException) as exc:
                kind = type(exc).__name__
                conn.close()
                conn = None
            t1 = time.monotonic()
            if t1 > self.deadline:
                break  # in flight at the end: neither a result nor an error
            if t1 < self.measure_from:
                self.done_warmup += 1
            elif kind is None:
                self.latencies.append(t1 - t0)  # every request completed inside the window
            else:
                self._error(kind)
        if conn is not None:
            conn.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-dir", type=Path, help="Start `icdcoder serve MODEL_DIR` on 127.0.0.1.")
    where.add_argument("--url", help="A running server on loopback, e.g. http://127.0.0.1:8000.")
    ap.add_argument(
        "--notes", default=None, help="Prepared dataset dir or folder of .txt (default: CodiEsp test)."
    )
    ap.add_argument("--max-notes", type=int, default=250)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="Measured seconds.")
    ap.add_argument("--warmup", type=float, default=5.0, help="Unmeasured seconds before.")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--no-evidence", action="store_true", help="Ask for codes only.")
    ap.add_argument("--timeout", type=float, default=60.0, help="Per-request timeout (s).")
    ap.add_argument("--grace", type=float, default=60.0, help="Abandon the run this long after the deadline.")
    ap.add_argument("--threads", type=int, default=None, help="Server torch threads (--model-dir).")
    ap.add_argument("--micro-batch", type=int, default=None, help="Server micro-batch size (--model-dir).")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="Server batching wait (--model-dir).")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--label", default="", help="Name of this configuration in the output.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the JSON result here.")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.duration <= 0:
        ap.error("--clients must be >= 1 and --duration > 0")

    desc, texts = load_notes(args.notes, args.max_notes)
    if not texts:
        ap.error("no notes found")
    opts = {"top_k": args.top_k, "evidence": not args.no_evidence}
    bodies = [json.dumps({"text": t, "id": f"n{i}", **opts}).encode() for i, t in enumerate(texts)]

    proc = None
    if args.url:
        u = urlparse(args.url)
        if u.scheme != "http" or u.hostname not in LOOPBACK or u.port is None:
            ap.error(
                "--url must be http://<loopback address>:<port> (this tool only loads the local machine)"
            )
        host, port = str(u.hostname), int(u.port)
    else:
        proc, host, port = start_server(args)
    try:
        model = get_json(host, port, "/v1/model?include_codes=false")
        before = model["server"].get("batching") or {}
        rss_before = _rss_mb(proc)
        load_before = os.getloadavg()
        start = time.monotonic()
        measure_from = start + args.warmup
        deadline = measure_from + args.duration
        clients = [
            Client(i, host, port, bodies, measure_from, deadline, args.timeout) for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        hard_stop = deadline + args.grace
        for c in clients:
            c.join(max(0.0, hard_stop - time.monotonic()))
        stuck = sum(c.is_alive() for c in clients)
        load_after = os.getloadavg()
        after = get_json(host, port, "/v1/model?include_codes=false")["server"].get("batching") or {}
        rss_after = _rss_mb(proc)
    finally:
        if proc is not None:
            stop_server(proc)

    lat = sorted(x for c in clients for x in c.latencies)
    errors: dict[str, int] = {}
    for c in clients:
        for k, v in c.errors.items():
            errors[k] = errors.get(k, 0) + v
    if stuck:
        errors["client_stuck_at_end"] = stuck
    n_err = sum(errors.values())
    batches = after.get("batches", 0) - before.get("batches", 0)
    notes_run = after.get("notes", 0) - before.get("notes", 0)
    chars = sorted(len(t) for t in texts)
    result: dict[str, Any] = {
        "label": args.label,
        "date": dt.date.today().isoformat(),
        "model": {
            "name": model.get("name"),
            "dataset": model.get("dataset"),
            "n_codes": model.get("n_codes"),
            "max_tokens": model.get("max_tokens"),
        },
        "notes": {"source": desc, "count": len(texts), "median_chars": chars[len(chars) // 2]},
        "request": opts,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_rss_mb": {"before": rss_before, "after": rss_after},  # resident memory (--model-dir only)
        "requests_ok": len(lat),
        "errors": errors,
        "throughput_rps": round(len(lat) / args.duration, 2),
        "latency_ms": {
            "p50": round(percentile(lat, 0.50) * 1000, 1),
            "p90": round(percentile(lat, 0.90) * 1000, 1),
            "p99": round(percentile(lat, 0.99) * 1000, 1),
            "max": round(lat[-1] * 1000, 1) if lat else None,
            "mean": round(sum(lat) / len(lat) * 1000, 1) if lat else None,
        },
        "server": {
            "micro_batch": model["server"].get("micro_batch"),
            "max_wait_ms": model["server"].get("max_wait_ms"),
            "threads": args.threads,
            "mean_batch_notes": round(notes_run / batches, 2) if batches else None,
            "max_batch_notes": after.get("max_batch"),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(load_after[0], 2),
        },
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:  # written first: the printing below may hit a closed pipe
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    lm = result["latency_ms"]
    print(
        f"| {args.label or result['model']['name']} | {result['model']['n_codes']:,} | {args.clients} | "
        f"{args.duration:.0f} s | {result['throughput_rps']} | {lm['p50']} | {lm['p99']} | "
        f"{result['server']['mean_batch_notes']} | {n_err} |"
    )
    print(text)
    return 0 if n_err == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
