"""Section and passage chunks: bounded, overlapping, at sentence and word boundaries, their offsets exact."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from app.knowledge.chunking import CHARACTERS_PER_TOKEN, SECTION_PASSAGES, Chunk, chunk, count_tokens
from app.knowledge.extract import SECTION_SEPARATOR, Block, document_text

WORDS = ("agent", "backup", "cluster", "daemon", "export", "failover", "gateway", "handler", "index", "journal")


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 18))).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def manual(seed: int = 7) -> list[Block]:
    """Two chapters, one with a subsection, of paragraphs of various lengths; one paragraph far longer than a
    section."""
    rng = random.Random(seed)  # noqa: S311 - a fixed seed: the same manual on every run
    blocks = [Block(text="Overview", kind="heading", level=1, page=1, section="Overview")]
    blocks += [
        Block(text=paragraph(rng, rng.randint(1, 6)), kind="paragraph", page=1, section="Overview") for _ in range(5)
    ]
    setup = SECTION_SEPARATOR.join(["Overview", "Setup"])
    blocks.append(Block(text="Setup", kind="heading", level=2, page=2, section=setup))
    blocks += [Block(text=paragraph(rng, 3), kind="paragraph", page=2, section=setup) for _ in range(3)]
    blocks.append(Block(text="Reference", kind="heading", level=1, page=3, section="Reference"))
    blocks.append(Block(text=paragraph(rng, 200), kind="paragraph", page=3, section="Reference"))
    return blocks


def levels(chunks: list[Chunk]) -> tuple[list[Chunk], list[Chunk]]:
    return [c for c in chunks if c.level == "section"], [c for c in chunks if c.level == "passage"]


def test_every_chunk_is_exactly_its_span_of_the_document_text() -> None:
    blocks = manual()
    text = document_text(blocks)

    chunks = chunk(blocks, chunk_tokens=64, overlap_tokens=16)

    assert chunks
    for piece in chunks:
        assert text[piece.start_offset : piece.end_offset] == piece.text
        assert piece.text == piece.text.strip()
        assert piece.content_hash == hashlib.sha256(piece.text.encode()).hexdigest()
        assert piece.token_count == count_tokens(piece.text)


def test_passages_and_sections_stay_within_their_bounds() -> None:
    sections, passages = levels(chunk(manual(), chunk_tokens=64, overlap_tokens=16))

    assert max(p.token_count for p in passages) <= 64
    assert max(s.token_count for s in sections) <= SECTION_PASSAGES * 64
    # Cut near the limit rather than into crumbs: most passages are more than half full.
    assert sum(p.token_count > 32 for p in passages) > len(passages) * 0.6


def test_passages_are_cut_between_words_and_mostly_after_sentences() -> None:
    blocks = manual()
    text = document_text(blocks)
    passages = levels(chunk(blocks, chunk_tokens=64, overlap_tokens=16))[1]

    for passage in passages:
        before = text[passage.start_offset - 1] if passage.start_offset else " "
        after = text[passage.end_offset] if passage.end_offset < len(text) else " "
        assert before.isspace()
        assert after.isspace()
    assert sum(passage.text.endswith(".") for passage in passages) > len(passages) * 0.9


def test_consecutive_passages_of_a_section_overlap_by_at_most_the_overlap() -> None:
    passages = levels(chunk(manual(), chunk_tokens=64, overlap_tokens=16))[1]

    pairs = [(a, b) for a, b in itertools.pairwise(passages) if a.parent_position == b.parent_position]
    assert pairs
    for first, second in pairs:
        assert second.start_offset > first.start_offset
        assert second.start_offset < first.end_offset
        assert first.end_offset - second.start_offset <= 16 * CHARACTERS_PER_TOKEN


def test_without_overlap_passages_tile_their_section() -> None:
    passages = levels(chunk(manual(), chunk_tokens=64, overlap_tokens=0))[1]

    for first, second in itertools.pairwise(passages):
        assert second.start_offset >= first.end_offset


def test_each_section_covers_its_passages_and_the_passages_cover_the_section() -> None:
    blocks = manual()
    text = document_text(blocks)
    sections, passages = levels(chunk(blocks, chunk_tokens=64, overlap_tokens=16))

    assert [s.position for s in sections] == list(range(len(sections)))
    assert [p.position for p in passages] == list(range(len(passages)))
    assert all(s.parent_position is None for s in sections)
    for section in sections:
        children = [p for p in passages if p.parent_position == section.position]
        assert children
        assert all(section.start_offset <= p.start_offset < p.end_offset <= section.end_offset for p in children)
        covered = {i for p in children for i in range(p.start_offset, p.end_offset)}
        uncovered = {i for i in range(section.start_offset, section.end_offset) if i not in covered}
        assert all(text[i].isspace() for i in uncovered)
    # Sections follow one another without overlapping.
    for first, second in itertools.pairwise(sections):
        assert second.start_offset > first.end_offset


def test_sections_start_at_headings_and_carry_their_path_and_page() -> None:
    sections = levels(chunk(manual(), chunk_tokens=64, overlap_tokens=16))[0]

    firsts: dict[str | None, Chunk] = {}
    for section in sections:
        firsts.setdefault(section.section, section)
    assert list(firsts) == ["Overview", SECTION_SEPARATOR.join(["Overview", "Setup"]), "Reference"]
    assert firsts["Overview"].text.startswith("Overview\n\n")
    assert firsts["Reference"].text.startswith("Reference\n\n")
    assert [firsts[name].page for name in firsts] == [1, 2, 3]


def test_a_paragraph_longer_than_a_section_is_split_into_sections_and_passages() -> None:
    blocks = manual()
    sections, passages = levels(chunk(blocks, chunk_tokens=64, overlap_tokens=16))

    reference = [s for s in sections if s.section == "Reference"]
    assert len(reference) >= 3
    assert reference[0].start_offset == document_text(blocks).index("Reference\n\n")
    assert reference[-1].end_offset == len(document_text(blocks))
    in_reference = [p for p in passages if p.parent_position in {s.position for s in reference}]
    assert len(in_reference) > SECTION_PASSAGES * len(reference) / 2
    assert all(p.page == 3 for p in in_reference)


def test_a_tiny_document_is_one_section_and_one_passage() -> None:
    blocks = [
        Block(text="Lyss", kind="heading", level=1, section="Lyss"),
        Block(text="Hello.", kind="paragraph", section="Lyss"),
    ]

    chunks = chunk(blocks, chunk_tokens=256, overlap_tokens=32)

    assert [(c.level, c.position, c.parent_position, c.text) for c in chunks] == [
        ("section", 0, None, "Lyss\n\nHello."),
        ("passage", 0, 0, "Lyss\n\nHello."),
    ]
    assert chunks[1].start_offset == 0
    assert chunks[1].end_offset == len("Lyss\n\nHello.")


def test_a_passage_never_spans_two_pages_so_its_page_is_where_its_text_is() -> None:
    # Short pages of one section: joined, the second page's sentence was cited as page 1.
    blocks = [
        Block(text="Facilities", kind="heading", level=1, page=1, section="Facilities"),
        Block(text="The canteen serves lunch at noon.", kind="paragraph", page=1, section="Facilities"),
        Block(text="Bicycles are parked in the basement.", kind="paragraph", page=2, section="Facilities"),
        Block(text="Visitors sign in at the desk.", kind="paragraph", page=3, section="Facilities"),
    ]

    chunks = chunk(blocks, chunk_tokens=256, overlap_tokens=32)

    assert [(c.level, c.page, c.text) for c in chunks] == [
        ("section", 1, "Facilities\n\nThe canteen serves lunch at noon."),
        ("section", 2, "Bicycles are parked in the basement."),
        ("section", 3, "Visitors sign in at the desk."),
        ("passage", 1, "Facilities\n\nThe canteen serves lunch at noon."),
        ("passage", 2, "Bicycles are parked in the basement."),
        ("passage", 3, "Visitors sign in at the desk."),
    ]


def test_a_heading_at_the_foot_of_a_page_stays_with_the_paragraph_under_it() -> None:
    blocks = [
        Block(text="Parking", kind="heading", level=1, page=1, section="Parking"),
        Block(text="Bicycles are parked in the basement.", kind="paragraph", page=2, section="Parking"),
    ]

    chunks = chunk(blocks, chunk_tokens=256, overlap_tokens=32)

    assert [(c.level, c.text) for c in chunks] == [
        ("section", "Parking\n\nBicycles are parked in the basement."),
        ("passage", "Parking\n\nBicycles are parked in the basement."),
    ]


def test_a_word_longer_than_a_passage_is_the_only_thing_cut_inside() -> None:
    blocks = [Block(text="start " + "x" * 100 + " end.", kind="paragraph")]

    passages = levels(chunk(blocks, chunk_tokens=10, overlap_tokens=2))[1]

    assert all(p.token_count <= 10 for p in passages)
    assert "".join(p.text for p in passages if "x" in p.text).count("x") >= 100
    assert passages[0].text == "start"
    assert passages[-1].text.endswith("end.")


def test_the_same_blocks_give_the_same_chunks() -> None:
    assert chunk(manual(), chunk_tokens=48, overlap_tokens=8) == chunk(manual(), chunk_tokens=48, overlap_tokens=8)
    assert chunk([], chunk_tokens=48, overlap_tokens=8) == []


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(0, 0), (64, -1), (64, 33)])
def test_sizes_out_of_range_are_refused(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        chunk(manual(), chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
