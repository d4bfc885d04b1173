"""Documents written by the same libraries' writers, read back into normalised blocks; damaged ones refused."""

from __future__ import annotations

import io
import zipfile

import docx
import openpyxl
import pytest
from fpdf import FPDF
from PIL import Image
from pptx import Presentation
from pypdf import PdfReader, PdfWriter

from app.knowledge import extract as extraction
from app.knowledge.extract import SECTION_SEPARATOR, Block, ExtractionError, NoTextFound, extract

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def path(*headings: str) -> str:
    return SECTION_SEPARATOR.join(headings)


def texts(blocks: list[Block]) -> list[str]:
    return [block.text for block in blocks]


def handbook_pdf() -> bytes:
    """Three pages with a running header and a numbered footer, a word hyphenated across a line."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=11)
    bodies = [
        ("Install the agent on every host and check its configu-\nration before the first run.", "Alpha rules."),
        ("Rotate the keys each quarter; the old ones stay valid for a day.", "Beta rules."),
        ("Back up the database every night and test a restore each month.", "Gamma rules."),
    ]
    for number, (first, second) in enumerate(bodies, start=1):
        pdf.add_page()
        pdf.set_y(10)
        pdf.cell(0, 10, "ACME Operations Handbook", new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(0, 6, first)
        pdf.ln(8)
        pdf.multi_cell(0, 6, second)
        pdf.set_y(-20)
        pdf.cell(0, 10, f"Page {number} of 3")
    return bytes(pdf.output())


def test_a_pdf_gives_its_paragraphs_page_by_page_without_running_headers_and_footers() -> None:
    extracted = extract(handbook_pdf(), filename="handbook.pdf", content_type="application/pdf")

    assert extracted.pages == 3
    assert [(block.page, block.text) for block in extracted.blocks] == [
        (1, "Install the agent on every host and check its configuration before the first run."),
        (1, "Alpha rules."),
        (2, "Rotate the keys each quarter; the old ones stay valid for a day."),
        (2, "Beta rules."),
        (3, "Back up the database every night and test a restore each month."),
        (3, "Gamma rules."),
    ]
    assert {block.kind for block in extracted.blocks} == {"paragraph"}
    assert extracted.text == "\n\n".join(texts(extracted.blocks))


def test_a_pdf_of_images_only_says_it_looks_scanned() -> None:
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(Image.new("RGB", (60, 40), "gray"), x=10, y=10, w=100)

    with pytest.raises(NoTextFound, match=r"scanned.*OCR"):
        extract(bytes(pdf.output()), filename="scan.pdf", content_type="application/pdf")


def test_a_password_protected_pdf_is_refused_by_name() -> None:
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(handbook_pdf())))
    writer.encrypt("secret", algorithm="AES-256")
    protected = io.BytesIO()
    writer.write(protected)

    with pytest.raises(ExtractionError, match="password-protected"):
        extract(protected.getvalue(), filename="locked.pdf", content_type="application/pdf")


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (handbook_pdf()[:900], "cut.pdf", "application/pdf"),
        (b"%PDF-1.7\nnot really a PDF at all", "fake.pdf", "application/pdf"),
        (b"PK\x03\x04 not a zip", "fake.docx", DOCX),
        (b"random bytes", "sheet.xlsx", "application/octet-stream"),
        (b"random bytes", "deck.pptx", "application/octet-stream"),
    ],
)
def test_a_damaged_file_gets_a_message_for_its_uploader(data: bytes, filename: str, content_type: str) -> None:
    with pytest.raises(ExtractionError) as raised:
        extract(data, filename=filename, content_type=content_type)

    assert not isinstance(raised.value, NoTextFound)
    assert "damaged" in str(raised.value)
    assert raised.value.__cause__ is None
    assert "Traceback" not in str(raised.value)


def test_a_password_protected_office_file_is_named_as_such() -> None:
    # Encrypted Office documents are OLE compound files, not zip archives.
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)

    with pytest.raises(ExtractionError, match="password-protected"):
        extract(data, filename="secret.docx", content_type=DOCX)


def test_an_office_file_that_inflates_past_the_bound_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(extraction, "MAX_UNZIPPED_XML_BYTES", 1024 * 1024)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (2 * 1024 * 1024))

    assert len(bomb.getvalue()) < 10_000
    with pytest.raises(ExtractionError, match="expands to more than can be read"):
        extract(bomb.getvalue(), filename="bomb.docx", content_type=DOCX)


def test_empty_and_unsupported_files_are_refused() -> None:
    with pytest.raises(ExtractionError, match="empty"):
        extract(b"", filename="notes.txt", content_type="text/plain")
    with pytest.raises(ExtractionError, match="not supported"):
        extract(b"MZ\x90\x00", filename="setup.exe", content_type="application/octet-stream")
    with pytest.raises(NoTextFound, match="No text"):
        extract(b"\n\n  \n", filename="blank.txt", content_type="text/plain")


def test_a_docx_gives_headings_sections_lists_and_tables_in_order() -> None:
    document = docx.Document()
    document.add_heading("Setup", level=1)
    document.add_paragraph("Read   this first.")
    document.add_heading("Install", level=2)
    document.add_paragraph("Download the package", style="List Bullet")
    document.add_paragraph("Run the installer", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for row, cells in enumerate([("Port", "Use"), ("8080", "HTTP")]):
        for column, value in enumerate(cells):
            table.cell(row, column).text = value
    document.add_heading("Upgrade", level=1)
    document.add_paragraph("Stop the service.")
    data = io.BytesIO()
    document.save(data)

    # Browsers often send application/octet-stream: the extension names the format.
    extracted = extract(data.getvalue(), filename="guide.docx", content_type="application/octet-stream")

    assert [(block.kind, block.level, block.text, block.section) for block in extracted.blocks] == [
        ("heading", 1, "Setup", "Setup"),
        ("paragraph", None, "Read this first.", "Setup"),
        ("heading", 2, "Install", path("Setup", "Install")),
        ("list", None, "- Download the package\n- Run the installer", path("Setup", "Install")),
        ("table", None, "Port | Use\n8080 | HTTP", path("Setup", "Install")),
        ("heading", 1, "Upgrade", "Upgrade"),
        ("paragraph", None, "Stop the service.", "Upgrade"),
    ]
    assert extracted.pages is None
    assert {block.page for block in extracted.blocks} == {None}


def test_an_empty_docx_has_no_text() -> None:
    data = io.BytesIO()
    docx.Document().save(data)

    with pytest.raises(NoTextFound):
        extract(data.getvalue(), filename="empty.docx", content_type=DOCX)


def test_a_pptx_gives_one_block_per_slide_with_its_notes() -> None:
    presentation = Presentation()
    for title, body, notes in [("Roadmap", "Ship search in May", "Mention the beta"), ("Budget", "Flat", "")]:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    data = io.BytesIO()
    presentation.save(data)

    extracted = extract(data.getvalue(), filename="deck.pptx", content_type="application/octet-stream")

    assert extracted.pages == 2
    assert [(block.kind, block.page, block.section, block.text) for block in extracted.blocks] == [
        ("slide", 1, "Roadmap", "Roadmap\nShip search in May\nNotes: Mention the beta"),
        ("slide", 2, "Budget", "Budget\nFlat"),
    ]


def xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    data = io.BytesIO()
    workbook.save(data)
    return data.getvalue()


def test_an_xlsx_gives_each_sheet_as_a_table_numbered_as_a_page() -> None:
    data = xlsx(
        {
            "Prices": [["Model", "Price"], ["small", 0.5], [None, None], ["large", 3]],
            "Notes": [["Reviewed in June"]],
        }
    )

    extracted = extract(data, filename="book.xlsx", content_type="application/octet-stream")

    assert extracted.pages == 2
    assert [(block.kind, block.page, block.section, block.text) for block in extracted.blocks] == [
        ("table", 1, "Prices", "Model | Price\nsmall | 0.5\nlarge | 3"),
        ("table", 2, "Notes", "Reviewed in June"),
    ]


def test_a_sheet_past_the_row_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction, "MAX_SHEET_ROWS", 10)
    data = xlsx({"Log": [[f"row {index}"] for index in range(11)]})

    with pytest.raises(ExtractionError, match="more than 10 rows"):
        extract(data, filename="log.xlsx", content_type="application/octet-stream")


def test_a_csv_has_its_dialect_sniffed_and_its_header_repeated_in_each_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(extraction, "TABLE_BLOCK_CHARACTERS", 40)
    rows = "\n".join(f"user{index};{index * 10}" for index in range(8))
    data = f"\ufeffname;score\n{rows}\n".encode()

    extracted = extract(data, filename="scores.csv", content_type="text/csv")

    assert len(extracted.blocks) > 1
    assert all(block.text.startswith("name | score\n") for block in extracted.blocks)
    body_rows = [line for block in extracted.blocks for line in block.text.split("\n")[1:]]
    assert body_rows == [f"user{index} | {index * 10}" for index in range(8)]
    assert all(len(block.text) <= 40 + len("user0 | 0") for block in extracted.blocks)


def test_html_drops_scripts_styles_and_navigation_and_keeps_headings() -> None:
    page = b"""<!doctype html><html><head><title>T</title><style>p {color: red}</style></head>
    <body><nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
    <h1>Guide</h1><p>Welcome to the <b>guide</b>.<script>track()</script></p>
    <h2>Limits</h2><ul><li>Ten users</li><li>Five keys</li></ul>
    <table><tr><th>Plan</th><th>Users</th></tr><tr><td>basic</td><td>10</td></tr></table>
    <pre>lyss serve
  --port 8080</pre><!-- a comment --></body></html>"""

    extracted = extract(page, filename="page.html", content_type="text/html; charset=utf-8")

    assert [(block.kind, block.text, block.section) for block in extracted.blocks] == [
        ("heading", "Guide", "Guide"),
        ("paragraph", "Welcome to the guide.", "Guide"),
        ("heading", "Limits", path("Guide", "Limits")),
        ("list", "- Ten users\n- Five keys", path("Guide", "Limits")),
        ("table", "Plan | Users\nbasic | 10", path("Guide", "Limits")),
        ("code", "lyss serve\n  --port 8080", path("Guide", "Limits")),
    ]


def test_markdown_gives_atx_and_setext_headings_and_keeps_a_fenced_block_whole() -> None:
    source = """# Setup

Intro with *emphasis* and a [link](https://example.com).

Install
-------

- one
- two
  - nested

```sh
make install

make test
```
"""
    extracted = extract(source.encode(), filename="README.md", content_type="text/markdown")

    assert [(block.kind, block.level, block.text, block.section) for block in extracted.blocks] == [
        ("heading", 1, "Setup", "Setup"),
        ("paragraph", None, "Intro with emphasis and a link.", "Setup"),
        ("heading", 2, "Install", path("Setup", "Install")),
        ("list", None, "- one\n- two\n  - nested", path("Setup", "Install")),
        ("code", None, "make install\n\nmake test", path("Setup", "Install")),
    ]


def test_plain_text_is_normalised_into_paragraphs() -> None:
    # "é" decomposed (e + combining accent), a NUL, a bell, a soft hyphen, runs of spaces, Windows line ends.
    source = "\ufeffCafe\u0301  menu\x00\x07\r\nsecond   line\r\n\r\n\r\nin\u00adformation\tbelow\r\n"

    extracted = extract(source.encode(), filename="notes.txt", content_type="text/plain")

    assert texts(extracted.blocks) == ["Caf\u00e9 menu second line", "information below"]
    assert extracted.text == "Caf\u00e9 menu second line\n\ninformation below"


def test_text_that_is_not_utf8_is_refused_clearly() -> None:
    with pytest.raises(ExtractionError, match="not UTF-8"):
        extract("caf\u00e9".encode("latin-1"), filename="notes.txt", content_type="text/plain")


def test_a_document_past_the_character_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction, "MAX_CHARACTERS", 100)

    with pytest.raises(ExtractionError, match="more than 100 characters"):
        extract(("word " * 40 + "\n\n").encode() * 3, filename="long.txt", content_type="text/plain")
