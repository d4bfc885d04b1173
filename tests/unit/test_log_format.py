"""LYSS_LOG_FORMAT: readable lines on a laptop's terminal, JSON lines anywhere else; routine scheduler lines
only at debug."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from app.observability.logging import configure_logging, logging_dict_config, resolved_log_format
from app.settings import ConfigurationError, load_settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("setting", "embedded", "stream", "expected"),
    [
        ("auto", True, Terminal(), "console"),  # `make run` in a terminal
        ("auto", True, io.StringIO(), "json"),  # the same, piped to a file or a collector
        ("auto", False, Terminal(), "json"),  # a production database: JSON even on a terminal
        ("json", True, Terminal(), "json"),  # an explicit choice stands
        ("console", False, io.StringIO(), "console"),
    ],
)
def test_auto_is_console_only_on_a_terminal_of_an_embedded_run(
    setting: str, embedded: bool, stream: io.StringIO, expected: str
) -> None:
    assert resolved_log_format(setting, embedded=embedded, stream=stream) == expected


def test_auto_is_the_default_and_an_unknown_format_is_refused(tmp_path: Path) -> None:
    environment = {"LYSS_DATA_DIR": str(tmp_path)}
    assert load_settings(environment).log_format == "auto"
    with pytest.raises(ConfigurationError, match="LYSS_LOG_FORMAT"):
        load_settings(environment | {"LYSS_LOG_FORMAT": "pretty"})


def test_console_lines_are_readable_and_json_lines_parse(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        configure_logging("info", "console")
        logging.getLogger("lyss.test").info("hello %s", "there")
        console = capsys.readouterr().err
        assert "hello there" in console
        assert not console.lstrip().startswith("{")
        configure_logging("info", "json")
        logging.getLogger("lyss.test").info("hello %s", "there")
        assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["event"] == "hello there"
    finally:
        configure_logging("info", "json")


def test_the_scheduler_s_routine_lines_show_only_at_debug() -> None:
    assert logging_dict_config("info")["loggers"]["saq"]["level"] == "WARNING"
    assert logging_dict_config("debug")["loggers"]["saq"]["level"] == "DEBUG"
