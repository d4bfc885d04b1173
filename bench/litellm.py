"""The LiteLLM proxy, the comparison point of `bench.gateway`: installed, configured and started for a run.

The benchmark installs a pinned LiteLLM into its own virtual environment under `.bench/` on first use
(PyPI), and starts it with one worker in front of the benchmark's provider. LiteLLM runs without a
database (no spend tracking, no per-key limits): lighter than Lyss with quotas, rate limits and usage
logging all on.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.foundation import _free_port

LITELLM_VERSION = "1.106.2"
VENV = Path(__file__).parent.parent / ".bench" / f"litellm-{LITELLM_VERSION}"
MASTER_KEY = "sk-bench-master"


def _litellm() -> Path:
    executable = VENV / "bin" / "litellm"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
        )
    return executable


@contextmanager
def litellm_proxy(upstream_base: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A running proxy serving model `gpt-bench` from `upstream_base`: (its URL, its process)."""
    executable = _litellm()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="lyss-litellm-bench-") as scratch:
        config = Path(scratch) / "config.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-bench\n"
            "    litellm_params:\n"
            "      model: openai/gpt-bench\n"
            f"      api_base: {upstream_base}\n"
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
            yield url, proxy
        finally:
            proxy.terminate()
            proxy.wait(30)
