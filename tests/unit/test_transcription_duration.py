"""What a transcription reserves (the longest its file plays, demuxed, whatever its header claims) and what it is
billed (the provider's duration, never more than reserved; the measured duration where the answer reports none)."""

from __future__ import annotations

import io

import av
import numpy
import pytest

from app.gateway.dialects import transcription
from app.gateway.dialects.transcription import billed_duration_ms, longest_duration_ms
from tests.support.mock_media import m4a_stating, tiny_wav, wav_stating

RESERVED = 2500


def test_a_wav_reserves_what_it_plays_and_an_unreadable_file_its_size_at_6_kbit_per_second() -> None:
    assert longest_duration_ms(tiny_wav(2.5)) == 2500
    # A WAV cut short reserves what is left of it: 3,956 bytes of 16-bit samples at 8 kHz, 247.25 ms.
    assert longest_duration_ms(tiny_wav(3.0)[:4000]) == 248
    # 7,500 bytes at 750 bytes a second: 10 s; an ID3 tag over no audio, 103 bytes: 137.3 ms, rounded up.
    assert longest_duration_ms(b"\x07" * 7500) == 10_000
    assert longest_duration_ms(b"ID3" + b"\xff" * 100) == 138


def test_a_header_that_understates_the_recording_does_not_shorten_the_reservation() -> None:
    # The WAV's data chunk says 1 s and holds 5 s; the M4A's movie, track and media headers say 1 s over 5 s of
    # AAC frames (1024 samples each at 44.1 kHz, and the encoder's priming frame).
    assert longest_duration_ms(wav_stating(5.0, 1.0)) == 5000
    assert 5000 <= longest_duration_ms(m4a_stating(5.0, 1.0)) <= 5100


def test_a_file_cut_off_by_the_packet_bound_reserves_at_least_its_size_at_6_kbit_per_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 s of 8 kHz 16-bit WAV come in packets of 1,024 samples: the first three read are 384 ms; the 80,044
    # bytes at 750 bytes a second, 106.73 s.
    monkeypatch.setattr(transcription, "MAX_PACKETS", 3)
    assert longest_duration_ms(wav_stating(5.0, 0.1)) == 106_726


def test_a_format_openai_does_not_take_is_not_demuxed_but_bounded_by_its_size() -> None:
    # 1 s of 16-bit Sun audio, 16,032 bytes: FFmpeg reads it, but only the demuxers of OpenAI's formats are
    # allowed, so it reserves its size at 750 bytes a second, 21.376 s.
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="au") as container:
        stream = container.add_stream("pcm_s16be", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(numpy.zeros((1, 8000), numpy.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert len(buffer.getvalue()) == 16_032
    assert longest_duration_ms(buffer.getvalue()) == 21_376


@pytest.mark.parametrize(
    ("answer", "content_type", "billed"),
    [
        (b'{"text": "hi", "duration": 2.0001}', "application/json", 2001),
        (b'{"text": "hi", "usage": {"type": "duration", "seconds": 1}}', "application/json; charset=utf-8", 1000),
        # More than reserved: the reservation is the ceiling.
        (b'{"text": "hi", "duration": 3600}', "application/json", RESERVED),
        # Tokens, text, or nothing usable: the duration measured from the file.
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
