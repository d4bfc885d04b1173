"""`lyss serve` as a real process: first start on an empty data directory, Ctrl-C, restart, bad settings."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from app.settings import new_key_entry
from tests.support.commands import LYSS, free_port, lyss_environment

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_SECONDS = 90


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(data_dir) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def _serve_until_ready(environment: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str]:
    """Start `lyss serve`; return it once /readyz answers 200, with what it printed before serving."""
    # A session of its own, so that "Ctrl-C" below reaches the whole group, as a terminal's would.
    process = subprocess.Popen(
        [LYSS, "serve"],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    while not printed or not printed[-1].startswith("Lyss is serving"):
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"lyss serve exited early: {process.communicate()}")
        printed.append(line)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"lyss serve exited early: {process.communicate()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process, "".join(printed)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("lyss serve was not ready in time")


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Name the process that did not stop before the evidence goes with the kill.
        remaining = [
            f"{child.pid} {child.status()} {' '.join(child.cmdline())[:200]}"
            for child in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        ]
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        raise AssertionError(f"lyss serve did not stop on Ctrl-C; still running: {remaining}; {stderr}") from None
    assert process.returncode == 0, stderr
    assert "Killing" not in stderr  # every worker stopped on its own


@pytest.mark.deployment
def test_serve_starts_on_an_empty_data_dir_stops_on_ctrl_c_and_reuses_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    environment = lyss_environment(LYSS_DATA_DIR=str(data_dir), LYSS_PORT=str(port))

    process, printed = _serve_until_ready(environment, port)
    readiness = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
    assert readiness == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
    assert "First start: created the demo tenant" in printed
    assert f"Sign in at http://127.0.0.1:{port}/portal" in printed
    assert f"the portal at http://127.0.0.1:{port}/portal" in printed
    assert "password " in printed
    # The printed snippet works as printed: the demo key reaches the built-in echo model at once.
    api_key = re.search(r"Your API key \(shown only once\): (sk-\S+)", printed)
    assert api_key is not None
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in printed
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key.group(1)}"},
        json={"model": "echo", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert answer.json()["choices"][0]["message"]["content"] == "echo: Hello"
    # The embedded job worker runs jobs: the demo admin tests the demo's channels in the background.
    assert "Lyss job worker started" in printed
    password = re.search(r"password (\S+)", printed)
    assert password is not None
    login = httpx.post(
        f"http://127.0.0.1:{port}/api/auth/login",
        json={"tenant": "demo", "email": "admin@demo.example.com", "password": password.group(1)},
    )
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    job = httpx.post(f"http://127.0.0.1:{port}/api/jobs", json={"kind": "gateway.test_channels"}, headers=admin)
    assert job.status_code == 201, job.text
    deadline = time.monotonic() + 60
    while (status := httpx.get(f"http://127.0.0.1:{port}/api/jobs/{job.json()['id']}", headers=admin).json())[
        "status"
    ] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert (status["status"], status["result"]["passed"]) == ("succeeded", 1)
    _ctrl_c(process)
    assert _processes_using(data_dir) == []  # PostgreSQL and Redis went with it
    assert (data_dir / "secrets.env").stat().st_mode & 0o777 == 0o600

    process, printed = _serve_until_ready(environment, port)
    _ctrl_c(process)
    assert "First start" not in printed  # the login is printed once, ever
    assert _processes_using(data_dir) == []

    # The demo admin from the first start is still there: the data was reused, not recreated.
    result = subprocess.run(
        [LYSS, "admin", "create", "--tenant", "demo", "--email", "admin@demo.example.com"],
        env=environment,
        input="another long passphrase\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "lyss: 'admin@demo.example.com' already has an account in tenant 'demo'"
    assert _processes_using(data_dir) == []  # a one-shot command stops the server it started


@pytest.mark.deployment
def test_a_ctrl_c_while_the_workers_start_stops_at_once_and_quietly(tmp_path: Path) -> None:
    port = free_port()
    environment = lyss_environment(LYSS_DATA_DIR=str(tmp_path / "data"), LYSS_PORT=str(port), LYSS_LOG_LEVEL="info")
    process = subprocess.Popen(
        [LYSS, "serve"],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    while not (line := process.stdout.readline()).startswith("Lyss is serving"):
        assert line, process.communicate()
    time.sleep(0.3)  # granian's worker and the job worker are loading the app now
    os.killpg(process.pid, signal.SIGINT)
    try:
        # A lost Ctrl-C made granian wait out its kill timeout (30 s) and kill the worker.
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"lyss serve did not stop on Ctrl-C: {process.communicate()}") from None
    assert process.returncode == 0, stderr
    assert "Killing" not in stderr
    assert "Traceback" not in stderr  # nor did the job worker die of it mid-import
    assert _processes_using(tmp_path / "data") == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"DATABASE_URL": "postgresql://lyss_app:secret-pw@127.0.0.1:1/lyss_db"},
            "lyss: cannot connect to PostgreSQL at 127.0.0.1:1/lyss_db (DATABASE_URL): ",
        ),
        ({"DATABASE_URL": "mysql://root@127.0.0.1/lyss"}, "lyss: DATABASE_URL: expected a postgresql:// URL"),
        ({"LYSS_PORT": "http"}, "lyss: LYSS_PORT: Expected `int`, got `str`"),
    ],
    ids=["unreachable", "wrong-scheme", "bad-port"],
)
def test_bad_settings_give_one_clear_line_and_a_failure_status(
    overrides: dict[str, str], expected: str, redis_url: str, tmp_path: Path
) -> None:
    defaults = {
        "LYSS_DATA_DIR": str(tmp_path),
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": new_key_entry(),
        "LYSS_JWT_KEYS": new_key_entry(),
        "DATABASE_URL": "postgresql://lyss_app@127.0.0.1:1/lyss_db",
    }
    environment = lyss_environment(**{**defaults, **overrides})
    result = subprocess.run(
        [LYSS, "serve"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "secret-pw" not in result.stderr
