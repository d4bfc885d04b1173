"""The portal's Jinja filters that shape text: times to the second, and where long names may wrap."""

from __future__ import annotations

import datetime

from app.portal.router import _breakable, _when


def test_times_show_seconds_in_utc() -> None:
    moment = datetime.datetime(2026, 11, 30, 9, 5, 7, 999_000, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert _when(moment) == "2026-11-30 07:05:07 UTC"
    assert _when(None) == "—"
    assert _when(None, "never") == "never"


def test_long_names_may_wrap_after_their_separators_and_stay_escaped() -> None:
    assert str(_breakable("ann@example.com")) == "ann@<wbr>example.<wbr>com"
    assert str(_breakable("user.role_changed")) == "user.<wbr>role_<wbr>changed"
    assert str(_breakable("<b>a-b</b>")) == "&lt;b&gt;a-<wbr>b&lt;/<wbr>b&gt;"
