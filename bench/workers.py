"""`LYSS_WORKERS=1` against `LYSS_WORKERS=2`: one `lyss serve` of each, the same key and provider, interleaved.

Run with `python -m bench.workers` (about a minute; loopback only, every wrk run bounded). Both servers run
side by side over one embedded PostgreSQL and Redis, with one `lyss worker` writing the usage log, against
`bench.upstream`; three rounds, each measuring both servers at 16 and 64 connections (the order of the servers
alternating between rounds), and the medians of the three reported. The usage log must hold one row per
request served when it is over.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.settings import new_key_entry
from bench.foundation import LYSS, ROOT, _free_port, _serve, _wrk, prepare_priced_tenant
from bench.gateway import BODY, DATABASE, _answered, _upstream, _usage_rows

CONNECTIONS = (16, 64)
WORKER_COUNTS = (1, 2)
ROUNDS = 3
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))


def main() -> None:
    load_before = os.getloadavg()
    figures: dict[tuple[int, int], list[dict[str, float]]] = {}
    with _upstream() as upstream_base, tempfile.TemporaryDirectory(prefix="lyss-workers-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            encryption_keys = new_key_entry()
            app_url, key, _ = asyncio.run(
                prepare_priced_tenant(
                    superuser_url, DATABASE, upstream_base, encryption_keys, prices={"gpt-bench": (150_000, 600_000)}
                )
            )
            environment = {
                "PATH": os.environ["PATH"],
                "DATABASE_URL": app_url,
                "REDIS_URL": redis_url,
                "LYSS_ENCRYPTION_KEYS": encryption_keys,
                "LYSS_JWT_KEYS": new_key_entry(),
            }
            auth = {"Authorization": f"Bearer {key}"}
            with ExitStack() as stack:
                ports = {workers: _free_port() for workers in WORKER_COUNTS}
                for workers, port in ports.items():
                    # Each granian worker's counts in files there, summed by /metrics: the usage check reads them.
                    metrics = Path(scratch) / f"metrics-{workers}"
                    metrics.mkdir()
                    served_by = {"LYSS_WORKERS": str(workers), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
                    stack.enter_context(_serve({**environment, **served_by}, port))
                worker = subprocess.Popen(
                    [LYSS, "worker"],
                    env={**environment, "PYTHONPATH": str(ROOT), "LYSS_LOG_LEVEL": "warning"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                stack.callback(worker.wait, 60)
                stack.callback(worker.terminate)
                urls = {workers: f"http://127.0.0.1:{port}/v1/chat/completions" for workers, port in ports.items()}
                for workers in WORKER_COUNTS:  # warm-up: every granian worker has loaded its caches
                    _wrk(urls[workers], CONNECTIONS[-1], auth, post_json=BODY, seconds=1)
                for round_number in range(ROUNDS):
                    order = WORKER_COUNTS if round_number % 2 == 0 else tuple(reversed(WORKER_COUNTS))
                    for workers in order:
                        for connections in CONNECTIONS:
                            run = _wrk(urls[workers], connections, auth, post_json=BODY, seconds=SECONDS)
                            if run["non_2xx"]:
                                raise SystemExit(f"{run['non_2xx']:.0f} answers were not 2xx ({workers} workers)")
                            figures.setdefault((workers, connections), []).append(run)
                served = sum(_answered(f"http://127.0.0.1:{port}", 200) for port in ports.values())
                rows = asyncio.run(_usage_rows(superuser_url, served))
        finally:
            redis_server.stop()
            postgres.stop()
    if rows.get("ok", 0) != served:
        raise SystemExit(f"the usage log holds {rows} rows for {served} requests served")
    _report(figures, load_before, os.getloadavg(), served)


def _report(
    figures: dict[tuple[int, int], list[dict[str, float]]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    served: int,
) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("model name")), "")
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · Lyss {commit} · {os.cpu_count()} CPUs ({cpu}) · "
        f"load average before {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after {'/'.join(f'{x:.2f}' for x in load_after)} · wrk -t1, {SECONDS} s a run, "
        f"{ROUNDS} rounds, medians · {served} requests served, one usage row each"
    )
    print("| LYSS_WORKERS | connections | req/s | p50 ms | p99 ms | req/s of each round |")
    print("|---:|---:|---:|---:|---:|---|")
    for (workers, connections), runs in sorted(figures.items()):
        rps = [run["rps"] for run in runs]
        print(
            f"| {workers} | {connections} | {statistics.median(rps):,.0f} "
            f"| {statistics.median(run['p50'] for run in runs):.2f} "
            f"| {statistics.median(run['p99'] for run in runs):.2f} | {', '.join(f'{x:,.0f}' for x in rps)} |"
        )


if __name__ == "__main__":
    main()
