"""The LiteLLM proxy under the same load as `bench.gateway`: the comparison point for Lyss's gateway.

Run with `make bench` (or `python -m bench.litellm`). The benchmark installs a pinned LiteLLM into its own
virtual environment under `.bench/` on first use (PyPI), starts it with one worker in front of the same
loopback mock provider, and drives it with wrk, bounded in time, to 127.0.0.1 only. LiteLLM runs without
a database (no spend tracking): lighter than Lyss with quotas, rate limits and usage logging all on.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.foundation import WRK_SECONDS, _free_port, _wrk

LITELLM_VERSION = "1.106.2"
VENV = Path(__file__).parent.parent / ".bench" / f"litellm-{LITELLM_VERSION}"
MASTER_KEY = "sk-bench-master"
BODY = '{"model": "gpt-bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}'
CONNECTIONS = (1, 16, 64)


def _litellm() -> Path:
    executable = VENV / "bin" / "litellm"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
        )
    return executable


def main() -> None:
    executable = _litellm()
    mock = subprocess.Popen([sys.executable, "-m", "tests.mock_upstream"], stdout=subprocess.PIPE, text=True)
    try:
        assert mock.stdout is not None
        upstream_port = int(mock.stdout.readline())
        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="lyss-litellm-bench-") as scratch:
            config = Path(scratch) / "config.yaml"
            config.write_text(
                "model_list:\n"
                "  - model_name: gpt-bench\n"
                "    litellm_params:\n"
                "      model: openai/gpt-bench\n"
                f"      api_base: http://127.0.0.1:{upstream_port}/bench/v1\n"
                "      api_key: sk-upstream\n"
                "general_settings:\n"
                f"  master_key: {MASTER_KEY}\n"
            )
            proxy = subprocess.Popen(
                [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or proxy.poll() is not None:
                        raise SystemExit("the LiteLLM proxy did not start within 120 s")
                    time.sleep(0.5)
                process = psutil.Process(proxy.pid)
                headers = {"Authorization": f"Bearer {MASTER_KEY}"}
                rows = []
                for connections in CONNECTIONS:
                    cpu_before = _cpu_seconds(process)
                    figures = _wrk(f"{url}/v1/chat/completions", connections, headers, post_json=BODY)
                    if figures["non_2xx"]:
                        raise SystemExit(f"LiteLLM answered {figures['non_2xx']:.0f} non-2xx responses")
                    served = figures["rps"] * WRK_SECONDS
                    cpu_ms = (_cpu_seconds(process) - cpu_before) * 1000 / max(served, 1)
                    rss = sum(item.memory_info().rss for item in [process, *process.children(recursive=True)])
                    rows.append((connections, figures, cpu_ms, rss / 2**20))
            finally:
                proxy.terminate()
                proxy.wait(30)
    finally:
        mock.kill()
    print(f"LiteLLM proxy {LITELLM_VERSION}, one worker, wrk -t1, {WRK_SECONDS} s per run, same mock provider")
    print("| connections | req/s | p50 ms | p90 ms | p99 ms | CPU ms per request | resident MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for connections, figures, cpu_ms, rss_mb in rows:
        print(
            f"| {connections} | {figures['rps']:.0f} | {figures['p50']:.2f} | {figures['p90']:.2f} "
            f"| {figures['p99']:.2f} | {cpu_ms:.1f} | {rss_mb:.0f} |"
        )


def _cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of the proxy and its children (uvicorn may fork a worker)."""
    total = 0.0
    for item in [process, *process.children(recursive=True)]:
        times = item.cpu_times()
        total += times.user + times.system
    return total


if __name__ == "__main__":
    main()
