"""The Portkey AI gateway, a comparison point of `bench.gateway`: installed, configured and started for a run.

The benchmark installs a pinned `@portkey-ai/gateway` with npm under `.bench/` on first use, and starts its
Node server (one process, as Portkey ships it) in front of the benchmark's provider, which each request
names as an OpenAI-compatible host (`x-portkey-provider: openai`, `x-portkey-custom-host`). Portkey keeps no
keys, quotas or usage log of its own here: it relays, as LiteLLM does in this benchmark.

`@hono/node-server` is pinned to 1.13.8 with an npm override: from 1.14.2 on, the gateway's streamed answers
fail with `TypeError: immutable` (it appends headers to the fetched response; Portkey-AI/gateway#1389),
and the gateway's own range (^1.3.3) would pull the newest.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.foundation import _free_port

PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.13.8"
PREFIX = Path(__file__).parent.parent / ".bench" / f"portkey-{PORTKEY_VERSION}-node-server-{HONO_NODE_SERVER_VERSION}"
SERVER = PREFIX / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
# The server listens on every interface and takes no address: this preload binds it to loopback.
_LOOPBACK = """
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, host, ...rest) {
  if (typeof port === "number" && (host === undefined || typeof host === "function")) {
    return listen.call(this, port, "127.0.0.1", ...(host === undefined ? rest : [host, ...rest]));
  }
  return listen.call(this, port, host, ...rest);
};
"""


def _portkey() -> Path:
    if not SERVER.exists():
        PREFIX.mkdir(parents=True, exist_ok=True)
        pins = {"@portkey-ai/gateway": PORTKEY_VERSION, "@hono/node-server": HONO_NODE_SERVER_VERSION}
        manifest = {"private": True, "dependencies": pins, "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION}}
        (PREFIX / "package.json").write_text(json.dumps(manifest))
        # No install scripts: the package's only one applies patches to its own development tools.
        subprocess.run(
            ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(PREFIX)], check=True
        )
    (PREFIX / "loopback.cjs").write_text(_LOOPBACK)
    return SERVER


def portkey_headers(upstream_base: str) -> dict[str, str]:
    """What a request to Portkey carries to reach the benchmark's provider."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream_base,
        "Authorization": "Bearer sk-upstream",
    }


@contextmanager
def portkey_gateway() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A running Portkey gateway on loopback: (its URL, its process)."""
    server = _portkey()
    port = _free_port()
    process = subprocess.Popen(
        ["node", "--require", str(PREFIX / "loopback.cjs"), str(server), f"--port={port}", "--headless"],
        env={**os.environ, "NODE_ENV": "production"},
        cwd=PREFIX,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the Portkey gateway did not start within 60 s")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)
