"""`LYSS_WORKERS=1` against `LYSS_WORKERS=2` against two replicas on a Redis Cluster, the same key, interleaved.

Run with `python -m bench.workers` (about two minutes; loopback only, every wrk run bounded). Three
setups run side by side over one embedded PostgreSQL, against `bench.upstream`: a `lyss serve` with one granian
worker and one with two, both on one embedded Redis with one `lyss worker` writing its usage log; and two
`lyss serve` replicas of one granian worker each on a Redis Cluster of 3 masters and 3 replicas, with a
`lyss worker` of their own. Three rounds, each measuring every setup at 16 and 64 connections (the order of
the setups rotating between rounds), and the medians of the three reported; the replicas take two wrk at
once, one each with half the connections, their requests/s summed and the worse of their latencies kept. The
usage log must hold one row per request served when it is over.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import statistics
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.settings import new_key_entry
from bench.foundation import LYSS, ROOT, _free_port, _serve, _wrk, prepare_priced_tenant
from bench.gateway import BODY, DATABASE, _answered, _upstream, _usage_rows
from tests.support.redis_cluster import LocalRedisCluster

CONNECTIONS = (16, 64)
ONE_WORKER, TWO_WORKERS, REPLICAS = "LYSS_WORKERS=1", "LYSS_WORKERS=2", "2 replicas, Redis Cluster"
SETUPS = (ONE_WORKER, TWO_WORKERS, REPLICAS)
ROUNDS = 3
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))


def main() -> None:
    load_before = os.getloadavg()
    figures: dict[tuple[str, int], list[dict[str, float]]] = {}
    with _upstream() as upstream_base, tempfile.TemporaryDirectory(prefix="lyss-workers-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        redis_cluster = LocalRedisCluster(Path(scratch) / "redis-cluster")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            cluster_url = redis_cluster.start()
            encryption_keys = new_key_entry()
            app_url, key, _ = asyncio.run(
                prepare_priced_tenant(
                    superuser_url, DATABASE, upstream_base, encryption_keys, prices={"gpt-bench": (150_000, 600_000)}
                )
            )
            environment = {
                "PATH": os.environ["PATH"],
                "DATABASE_URL": app_url,
                "LYSS_ENCRYPTION_KEYS": encryption_keys,
                "LYSS_JWT_KEYS": new_key_entry(),
            }
            servers = {
                ONE_WORKER: [(redis_url, 1)],
                TWO_WORKERS: [(redis_url, 2)],
                REPLICAS: [(cluster_url, 1), (cluster_url, 1)],
            }
            auth = {"Authorization": f"Bearer {key}"}
            with ExitStack() as stack:
                ports: dict[str, list[int]] = {}
                for setup, served_by in servers.items():
                    for server_redis_url, workers in served_by:
                        port = _free_port()
                        # Each granian worker's counts in files there, summed by /metrics: the usage check reads them.
                        metrics = Path(scratch) / f"metrics-{port}"
                        metrics.mkdir()
                        server_environment = {
                            **environment,
                            "REDIS_URL": server_redis_url,
                            "LYSS_WORKERS": str(workers),
                            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                        }
                        stack.enter_context(_serve(server_environment, port))
                        ports.setdefault(setup, []).append(port)
                for worker_redis_url in (redis_url, cluster_url):
                    worker = subprocess.Popen(
                        [LYSS, "worker"],
                        env={
                            **environment,
                            "REDIS_URL": worker_redis_url,
                            "PYTHONPATH": str(ROOT),
                            "LYSS_LOG_LEVEL": "warning",
                        },
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    stack.callback(worker.wait, 60)
                    stack.callback(worker.terminate)
                urls = {
                    setup: [f"http://127.0.0.1:{port}/v1/chat/completions" for port in setup_ports]
                    for setup, setup_ports in ports.items()
                }
                for setup in SETUPS:  # warm-up: every granian worker has loaded its caches
                    _load(urls[setup], CONNECTIONS[-1], auth, seconds=1)
                for round_number in range(ROUNDS):
                    order = SETUPS[round_number:] + SETUPS[:round_number]
                    for setup in order:
                        for connections in CONNECTIONS:
                            run = _load(urls[setup], connections, auth, seconds=SECONDS)
                            if run["non_2xx"]:
                                raise SystemExit(f"{run['non_2xx']:.0f} answers were not 2xx ({setup})")
                            figures.setdefault((setup, connections), []).append(run)
                served = sum(
                    _answered(f"http://127.0.0.1:{port}", 200) for setup_ports in ports.values() for port in setup_ports
                )
                rows = asyncio.run(_usage_rows(superuser_url, served))
        finally:
            redis_cluster.stop()
            redis_server.stop()
            postgres.stop()
    if rows.get("ok", 0) != served:
        raise SystemExit(f"the usage log holds {rows} rows for {served} requests served")
    _report(figures, load_before, os.getloadavg(), served)


def _load(urls: list[str], connections: int, headers: dict[str, str], seconds: int) -> dict[str, float]:
    """`connections` shared out among `urls`, one wrk each, all at once: the sums, and the worst latencies."""
    with ThreadPoolExecutor(len(urls)) as pool:
        runs = list(
            pool.map(lambda url: _wrk(url, connections // len(urls), headers, post_json=BODY, seconds=seconds), urls)
        )
    return {
        "rps": sum(run["rps"] for run in runs),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "p50": max(run["p50"] for run in runs),
        "p99": max(run["p99"] for run in runs),
    }


def _report(
    figures: dict[tuple[str, int], list[dict[str, float]]],
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
        f"after {'/'.join(f'{x:.2f}' for x in load_after)} · wrk -t1 (one a replica, half the connections each, "
        f"requests/s summed, the worse latency), {SECONDS} s a run, {ROUNDS} rounds, medians · "
        f"{served} requests served, one usage row each"
    )
    print("| setup | connections | req/s | p50 ms | p99 ms | req/s of each round |")
    print("|---|---:|---:|---:|---:|---|")
    for setup in SETUPS:
        for connections in CONNECTIONS:
            runs = figures[setup, connections]
            rps = [run["rps"] for run in runs]
            print(
                f"| {setup} | {connections} | {statistics.median(rps):,.0f} "
                f"| {statistics.median(run['p50'] for run in runs):.2f} "
                f"| {statistics.median(run['p99'] for run in runs):.2f} | {', '.join(f'{x:,.0f}' for x in rps)} |"
            )


if __name__ == "__main__":
    main()
