"""What a transcription reserves (the longest its file can last) and what it is billed (the provider's duration,
never more than reserved; the reservation where the answer reports none)."""

from __future__ import annotations

import pytest

from app.gateway.dialects.transcription import billed_duration_ms, longest_duration_ms
from tests.support.mock_media import tiny_wav

RESERVED = 2500


def test_a_wav_reserves_its_stated_length_and_an_unreadable_file_its_size_at_6_kbit_per_second() -> None:
    assert longest_duration_ms(tiny_wav(2.5)) == 2500
    # A WAV cut short still reserves what its header states: the most it can be billed, not what it is.
    assert longest_duration_ms(tiny_wav(3.0)[:4000]) == 3000
    # 7,500 bytes at 750 bytes a second: 10 s; an ID3 tag over no audio, 103 bytes: 137.3 ms, rounded up.
    assert longest_duration_ms(b"\x07" * 7500) == 10_000
    assert longest_duration_ms(b"ID3" + b"\xff" * 100) == 138


@pytest.mark.parametrize(
    ("answer", "content_type", "billed"),
    [
        (b'{"text": "hi", "duration": 2.0001}', "application/json", 2001),
        (b'{"text": "hi", "usage": {"type": "duration", "seconds": 1}}', "application/json; charset=utf-8", 1000),
        # More than reserved: the reservation is the ceiling.
        (b'{"text": "hi", "duration": 3600}', "application/json", RESERVED),
        # Tokens, text, or nothing usable: the duration read from the file.
        (b'{"text": "hi", "usage": {"type": "tokens", "input_tokens": 9}}', "application/json", RESERVED),
        (b"hi\n", "text/plain; charset=utf-8", RESERVED),
        (b"WEBVTT\n", "text/vtt", RESERVED),
        (b'{"text": "hi", "duration": -4}', "application/json", RESERVED),
        (b'{"text": "hi", "duration": "long"}', "application/json", RESERVED),
        (b"not json", "application/json", RESERVED),
    ],
)
def test_the_billed_duration_is_the_providers_within_the_reservation(
    answer: bytes, content_type: str, billed: int
) -> None:
    assert billed_duration_ms(answer, content_type, RESERVED) == billed
