"""Blocks to parent section chunks and the token-bounded, overlapping passage chunks inside them."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import msgspec

from app.gateway.adapters.base import estimated_tokens
from app.knowledge.extract import BLOCK_SEPARATOR, Block

# The gateway's estimate (about four characters a token): a passage of `chunk_tokens` is at most this many
# times as many characters.
CHARACTERS_PER_TOKEN = 4
# A section chunk holds up to this many passages' worth of text: what chat gets around a passage that matched.
SECTION_PASSAGES = 4

ChunkLevel = Literal["section", "passage"]

# Where a passage may end, best first: after a sentence, after a line, after a word.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"')\]\u201d\u2019\u00bb]*(?=\s)")
_LINE_END = re.compile(r"\S(?=\n)")
_WORD_END = re.compile(r"\S(?=\s)")
# Where the next passage may start, inside the overlap: at a sentence, else at a word.
_SENTENCE_START = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"')\]\u201d\u2019\u00bb]*\s+(?=\S)")
_WORD_START = re.compile(r"(?<=\s)\S")


class Chunk(msgspec.Struct, frozen=True):
    """A piece of the document's normalised text (`text == document_text[start_offset:end_offset]`). A passage's
    `parent_position` is the position of the section it lies in; positions count from 0 within a level."""

    text: str
    level: ChunkLevel
    position: int
    parent_position: int | None
    page: int | None
    section: str | None
    start_offset: int
    end_offset: int
    token_count: int
    content_hash: str


def count_tokens(text: str) -> int:
    """The gateway's estimate, so that a passage's size here is what an embedding call is reserved for."""
    return estimated_tokens(len(text))


def chunk(blocks: list[Block], *, chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """The sections of the document (a heading and the blocks under it on one page, at most SECTION_PASSAGES
    times chunk_tokens, cut at block boundaries, a longer block cut like a passage) in order, then their
    passages (at most chunk_tokens, each starting `overlap_tokens` or a little less before the previous one
    ended, cut after a sentence where one is near the limit, never inside a word unless a word is longer than
    a passage).
    The same blocks always give the same chunks."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    if not 0 <= overlap_tokens <= chunk_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and half of chunk_tokens")
    text = BLOCK_SEPARATOR.join(block.text for block in blocks)
    starts: list[int] = []
    offset = 0
    for block in blocks:
        starts.append(offset)
        offset += len(block.text) + len(BLOCK_SEPARATOR)

    passage_characters = chunk_tokens * CHARACTERS_PER_TOKEN
    section_characters = SECTION_PASSAGES * passage_characters
    overlap_characters = overlap_tokens * CHARACTERS_PER_TOKEN

    sections: list[Chunk] = []
    passages: list[Chunk] = []
    for first, last in _section_groups(blocks, starts, section_characters):
        group_start = starts[first]
        group_end = starts[last] + len(blocks[last].text)
        block_ends = {starts[index] + len(blocks[index].text) for index in range(first, last + 1)}
        # A section is never longer than its limit: a longer single block is cut like a passage, without overlap.
        for section_start, section_end in _windows(text, group_start, group_end, section_characters, 0, block_ends):
            parent = len(sections)
            sections.append(_chunk(text, "section", parent, None, section_start, section_end, blocks, starts, first))
            for start, end in _windows(
                text, section_start, section_end, passage_characters, overlap_characters, block_ends
            ):
                passages.append(_chunk(text, "passage", len(passages), parent, start, end, blocks, starts, first))
    return sections + passages


def _section_groups(blocks: list[Block], starts: list[int], limit: int) -> list[tuple[int, int]]:
    """Runs of blocks (first and last index): a new one at each heading, change of section or page, or when the
    run would pass `limit` characters (a single block may)."""
    groups: list[tuple[int, int]] = []
    first = 0
    for index in range(1, len(blocks) + 1):
        if index < len(blocks):
            block = blocks[index]
            same_section = block.kind != "heading" and block.section == blocks[first].section
            # A page ends a run too: a passage then lies on one page, the page its citation names.
            same_page = block.page == blocks[first].page
            fits = starts[index] + len(block.text) - starts[first] <= limit
            # A heading stays with the block under it, however long: that block is then cut into several sections.
            lone_heading = index - first == 1 and blocks[first].kind == "heading"
            if same_section and ((same_page and fits) or lone_heading):
                continue
        groups.append((first, index - 1))
        first = index
    return [(first, last) for first, last in groups if first <= last]


def _windows(text: str, start: int, end: int, limit: int, overlap: int, block_ends: set[int]) -> list[tuple[int, int]]:
    """Spans of text[start:end] of at most `limit` characters, without whitespace at either end, each starting at
    most `overlap` characters before the previous one ended."""
    spans: list[tuple[int, int]] = []
    start = _skip_space(text, start, end)
    while start < end:
        stop = end if end - start <= limit else _cut(text, start, start + limit, block_ends)
        stop = _trim_space(text, start, stop)
        if stop > start:
            spans.append((start, stop))
        if stop >= _trim_space(text, start, end):
            break
        following = _overlap_start(text, stop, overlap) if overlap else stop
        # Always go forward, whatever the overlap found.
        start = _skip_space(text, following if following > start else stop, end)
    return spans


def _cut(text: str, start: int, limit: int, block_ends: set[int]) -> int:
    """Where a window from `start` ends when the text goes on past `limit`: the last block end in its second
    half, else the last sentence end, line end or word end there, else the last word end at all, else `limit`
    (a word longer than a window is the one thing cut inside)."""
    floor = start + (limit - start) // 2
    ends = [position for position in block_ends if floor <= position <= limit]
    if ends:
        return max(ends)
    for pattern, lowest in ((_SENTENCE_END, floor), (_LINE_END, floor), (_WORD_END, floor), (_WORD_END, start)):
        found = [match.end() for match in pattern.finditer(text, lowest, limit + 1) if match.end() <= limit]
        if found:
            return found[-1]
    return limit


def _overlap_start(text: str, stop: int, overlap: int) -> int:
    """Where the next window starts: the first sentence start, else the first word start, within `overlap`
    characters before `stop`."""
    floor = max(0, stop - overlap)
    for pattern in (_SENTENCE_START, _WORD_START):
        match = pattern.search(text, floor, stop)
        if match is not None:
            return match.end() if pattern is _SENTENCE_START else match.start()
    return stop


def _skip_space(text: str, position: int, end: int) -> int:
    while position < end and text[position].isspace():
        position += 1
    return position


def _trim_space(text: str, start: int, stop: int) -> int:
    while stop > start and text[stop - 1].isspace():
        stop -= 1
    return stop


def _chunk(
    text: str,
    level: ChunkLevel,
    position: int,
    parent: int | None,
    start: int,
    end: int,
    blocks: list[Block],
    starts: list[int],
    first: int,
) -> Chunk:
    # The block the chunk starts in gives its page and section (blocks from `first` on are the section's).
    index = first
    while index + 1 < len(blocks) and starts[index + 1] <= start:
        index += 1
    piece = text[start:end]
    return Chunk(
        text=piece,
        level=level,
        position=position,
        parent_position=parent,
        page=blocks[index].page,
        section=blocks[index].section,
        start_offset=start,
        end_offset=end,
        token_count=count_tokens(piece),
        content_hash=hashlib.sha256(piece.encode()).hexdigest(),
    )
