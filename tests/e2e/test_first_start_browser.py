"""A new admin on a first start, as `make run` does it, signs in with the printed demo login and reaches an
answer of the echo model from the dashboard, by clicks alone, in a real browser.

Saves `journey-first-chat*.png` (1280 and 390 px wide) into docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths
from tests.support.commands import LYSS, free_port, lyss_environment

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.deployment]  # an empty data directory

FIRST_START_SECONDS = 90


def _first_start(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`lyss serve --migrate` on an empty data directory, as `make run` starts it, its output into a file."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [LYSS, "serve", "--migrate"],
            env=lyss_environment(LYSS_DATA_DIR=str(data_dir), LYSS_PORT=str(port)),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _printed_login_once_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> dict[str, str]:
    deadline = time.monotonic() + FIRST_START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"lyss serve exited: {log_path.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                printed = log_path.read_text()
                login = {
                    field: re.search(rf"^ +{field} +(\S+)$", printed, re.MULTILINE)
                    for field in ("tenant", "email", "password")
                }
                assert all(login.values()), printed
                return {field: match.group(1) for field, match in login.items() if match is not None}
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"lyss serve was not ready in time: {log_path.read_text()}")


async def test_a_new_admin_on_a_first_start_reaches_a_chat_answer_by_clicks(browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    process = _first_start(tmp_path / "data", port, log_path)
    try:
        login = await asyncio.to_thread(_printed_login_once_ready, process, port, log_path)
        url = f"http://127.0.0.1:{port}"
        context = await browser.new_context(viewport=WIDE)
        page = await context.new_page()
        await page.goto(f"{url}/portal/")
        await expect(page).to_have_url(re.compile(r"/portal/login"))
        await page.fill("#tenant", login["tenant"])
        await page.fill("#email", login["email"])
        await page.fill("#password", login["password"])
        await page.click("button[type=submit]")

        # From the dashboard's getting-started card straight into a conversation with the echo model.
        await page.locator('#getting-started a[href="/portal/chat"]').click()
        await expect(page).to_have_url(f"{url}/portal/chat")
        # A fresh organization has no default chat model: the form starts on the one model there is.
        await expect(page.locator("#model")).to_have_value("echo")
        await page.click("main button:text('Start')")
        await expect(page.locator("#message")).to_be_visible()
        await page.fill("#message", "Hello from my first hour")
        await page.click("#send")
        answer = page.locator("#transcript .msg.assistant").last
        await expect(answer.locator(".md")).to_contain_text("Hello from my first hour")
        await expect(answer.locator(".hint")).to_contain_text("echo")
        await expect(page.locator("#composer-error")).to_be_hidden()
        await shoot_both_widths(page, "journey-first-chat")
        await context.close()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
