"""A document's bytes to normalised text blocks (headings, paragraphs, tables, slides) with pages and sections."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from bs4 import Tag
    from docx.table import Table
    from markdown_it.token import Token

# Bounds on the work one document may cost, whatever its size on disk says.
MAX_CHARACTERS = 5_000_000
# openpyxl streams rows (read-only mode), but a sheet of a million rows would still be a million rows of text.
MAX_SHEET_ROWS = 100_000
# Columns past this one are not read: a sheet that declares 16,384 columns would pad every row to that width.
MAX_SHEET_COLUMNS = 200
# Office files are zip archives whose declared sizes zipfile enforces while inflating: refusing large ones before
# the libraries open them is what stops a zip bomb. XML is what they parse into trees (several times its size).
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_UNZIPPED_XML_BYTES = 64 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000
# A table is cut into blocks of about this many characters, each starting with the header row, so that every
# chunk of a long table still says what its columns are.
TABLE_BLOCK_CHARACTERS = 2_000

SECTION_SEPARATOR = " \u203a "  # a single right-pointing angle quotation mark
BLOCK_SEPARATOR = "\n\n"

BlockKind = Literal["heading", "paragraph", "list", "table", "code", "slide"]
Format = Literal["pdf", "docx", "pptx", "xlsx", "csv", "html", "markdown", "text"]

_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_CONTENT_TYPES: dict[str, Format] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_EXTENSIONS: dict[str, Format] = {
    "pdf": "pdf",
    "docx": "docx",
    "pptx": "pptx",
    "xlsx": "xlsx",
    "csv": "csv",
    "html": "html",
    "htm": "html",
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "text": "text",
}
_FORMAT_NAMES: dict[Format, str] = {
    "pdf": "PDF",
    "docx": "DOCX",
    "pptx": "PPTX",
    "xlsx": "XLSX",
    "csv": "CSV",
    "html": "HTML",
    "markdown": "Markdown",
    "text": "text",
}


class ExtractionError(Exception):
    """The document cannot be read; the message is fit to show its uploader."""


class NoTextFound(ExtractionError):
    """The document was read but holds no text (a scanned PDF, an empty sheet)."""


class Block(msgspec.Struct, frozen=True):
    """A piece of the document's normalised text. `page` is 1-based: the PDF page, the PPTX slide, the XLSX
    sheet; None where the format has no pages. `section` is the path of headings above it (a heading's own
    path includes itself)."""

    text: str
    kind: BlockKind
    level: int | None = None
    page: int | None = None
    section: str | None = None


class Extracted(msgspec.Struct, frozen=True):
    """The blocks of a document, in reading order, and its page count (None where the format has no pages)."""

    blocks: list[Block]
    pages: int | None = None

    @property
    def text(self) -> str:
        """The document's normalised text, the one chunk offsets point into."""
        return document_text(self.blocks)


def document_text(blocks: Iterable[Block]) -> str:
    """The blocks joined by a blank line: the text every chunk's offsets point into."""
    return BLOCK_SEPARATOR.join(block.text for block in blocks)


def extract(data: bytes, *, filename: str, content_type: str) -> Extracted:
    """The normalised blocks of a document. Raises ExtractionError (NoTextFound when there is no text) with a
    message for the uploader, never a library's exception."""
    kind = detect_format(filename=filename, content_type=content_type)
    if not data:
        raise ExtractionError("The file is empty.")
    reader = _READERS[kind]
    try:
        extracted = reader(data)
    except ExtractionError:
        raise
    except MemoryError:
        raise ExtractionError("The file is too large to read.") from None
    except Exception:
        # Every library raises its own exceptions for a damaged file; the user needs only to know it is one.
        raise ExtractionError(
            f"The file could not be read as {_FORMAT_NAMES[kind]}: it is damaged or not a {_FORMAT_NAMES[kind]} file."
        ) from None
    if not extracted.blocks:
        if kind == "pdf":
            raise NoTextFound(_SCANNED_PDF)
        raise NoTextFound("No text was found in the file.")
    return extracted


def detect_format(*, filename: str, content_type: str) -> Format:
    """The format named by the content type, else by the file name's extension (browsers often send
    application/octet-stream)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in _CONTENT_TYPES:
        return _CONTENT_TYPES[media_type]
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    raise ExtractionError(
        "This type of file is not supported: upload a PDF, DOCX, PPTX, XLSX, CSV, HTML, Markdown or text file."
    )


# Normalisation ---------------------------------------------------------------------------------------------------

# Control characters (C0, DEL, C1) and the invisible format characters that only break words apart for search.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff]")
_WHITESPACE = re.compile(r"\s+")
# A word cut at the end of a PDF line ("configu-" / "ration"): joined when the next line goes on in lower case.
_HYPHENATED_BREAK = re.compile(r"(\w)-[ \t]*\n[ \t]*(?=[a-zà-ÿ])")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


def normalise(text: str) -> str:
    """Unicode NFC, control characters removed, every run of whitespace one space, trimmed."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", text))
    return _WHITESPACE.sub(" ", text).strip()


def normalise_lines(lines: Iterable[str]) -> str:
    """Each line normalised, empty ones dropped, the rest kept one a line (lists, table rows)."""
    return "\n".join(line for line in (normalise(line) for line in lines) if line)


def normalise_code(text: str) -> str:
    """Code keeps its lines and indentation: NFC, control characters and trailing spaces removed."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\t", "    ")))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


class _Builder:
    """Collects blocks, keeps the heading path, and stops a document past MAX_CHARACTERS."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.headings: list[tuple[int, str]] = []
        self.characters = 0

    @property
    def section(self) -> str | None:
        return SECTION_SEPARATOR.join(title for _, title in self.headings) or None

    def heading(self, text: str, level: int, *, page: int | None = None) -> None:
        text = normalise(text)
        if not text:
            return
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, text))
        self._add(Block(text=text, kind="heading", level=level, page=page, section=self.section))

    def add(self, text: str, kind: BlockKind, *, page: int | None = None, section: str | None = None) -> None:
        """A block whose text is already normalised (empty ones are dropped)."""
        if text:
            self._add(Block(text=text, kind=kind, page=page, section=section if section else self.section))

    def paragraph(self, text: str, *, page: int | None = None) -> None:
        self.add(normalise(text), "paragraph", page=page)

    def table(self, rows: Iterable[Iterable[object]], *, page: int | None = None, section: str | None = None) -> None:
        """Rows of cells, each row's cells joined by " | ", cut into blocks that each repeat the header row."""
        header: str | None = None
        lines: list[str] = []
        size = 0
        for row in rows:
            line = " | ".join(normalise(str(cell)) for cell in _trimmed(row))
            if not line.strip(" |"):
                continue
            if header is None:
                header = line
                lines, size = [line], len(line)
                continue
            if size + len(line) > TABLE_BLOCK_CHARACTERS and len(lines) > 1:
                self.add("\n".join(lines), "table", page=page, section=section)
                lines, size = [header], len(header)
            lines.append(line)
            size += len(line) + 1
        if lines:
            self.add("\n".join(lines), "table", page=page, section=section)

    def _add(self, block: Block) -> None:
        self.characters += len(block.text) + len(BLOCK_SEPARATOR)
        if self.characters > MAX_CHARACTERS:
            raise ExtractionError(
                f"The document has more than {MAX_CHARACTERS:,} characters of text: split it into smaller files."
            )
        self.blocks.append(block)


def _trimmed(row: Iterable[object]) -> list[object]:
    """The row's cells, None as empty, without the empty cells at its end."""
    cells = ["" if cell is None else cell for cell in row]
    while cells and not str(cells[-1]).strip():
        cells.pop()
    return cells


# PDF -------------------------------------------------------------------------------------------------------------

_SCANNED_PDF = (
    "No text was found in this PDF: it looks like a scanned document (images of pages). "
    "Text recognition (OCR) is not offered: upload a PDF with a text layer."
)
# Header and footer lines are looked for among each page's first and last lines; page numbers differ, so digits
# are masked before lines are compared.
_EDGE_LINES = 2
_DIGITS = re.compile(r"\d+")


def _read_pdf(data: bytes) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        # A PDF restricted only by an owner password opens with an empty user password.
        try:
            decrypted = bool(reader.decrypt(""))
        except Exception:
            decrypted = False
        if not decrypted:
            raise ExtractionError("This PDF is password-protected: upload it without the password.")
    if not reader.pages:
        raise ExtractionError("The file could not be read as PDF: it is damaged or not a PDF file.")
    pages: list[list[str]] = []
    characters = 0
    for page in reader.pages:
        try:
            # Layout mode keeps the vertical gaps between paragraphs as blank lines.
            text = page.extract_text(extraction_mode="layout")
        except FileNotDecryptedError:
            raise ExtractionError("This PDF is password-protected: upload it without the password.") from None
        except Exception:
            text = page.extract_text()
        characters += len(text)
        if characters > 2 * MAX_CHARACTERS:
            # Layout mode pads with spaces: twice the bound before normalisation.
            raise ExtractionError(
                f"The document has more than {MAX_CHARACTERS:,} characters of text: split it into smaller files."
            )
        pages.append(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    repeated = _repeated_edge_lines(pages)
    builder = _Builder()
    for number, lines in enumerate(pages, start=1):
        kept = _without_edges(lines, repeated)
        for paragraph in _BLANK_LINE.split("\n".join(kept)):
            builder.paragraph(_HYPHENATED_BREAK.sub(r"\1", paragraph.strip()), page=number)
    return Extracted(blocks=builder.blocks, pages=len(pages))


def _edge_key(line: str) -> str:
    return _DIGITS.sub("#", normalise(line))


def _edges(lines: list[str]) -> list[int]:
    """The indexes of a page's first and last non-empty lines."""
    filled = [index for index, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]))


def _repeated_edge_lines(pages: list[list[str]]) -> set[str]:
    """Lines (digits masked) at the top or bottom of more than half the pages, in a document of three pages or
    more: running headers and footers."""
    if len(pages) < 3:
        return set()
    seen = Counter(key for lines in pages for key in {_edge_key(lines[index]) for index in _edges(lines)})
    return {key for key, count in seen.items() if key and count * 2 > len(pages)}


def _without_edges(lines: list[str], repeated: set[str]) -> list[str]:
    if not repeated:
        return lines
    dropped = {index for index in _edges(lines) if _edge_key(lines[index]) in repeated}
    return [line for index, line in enumerate(lines) if index not in dropped]


# Office files ----------------------------------------------------------------------------------------------------


def _check_zip(data: bytes, kind: Format) -> None:
    """Refuses what is not an Office file, or one that would inflate past the bounds (a zip bomb)."""
    name = _FORMAT_NAMES[kind]
    if data.startswith(_OLE_SIGNATURE):
        raise ExtractionError(
            f"This {name} file is password-protected or in the old binary Office format: "
            f"upload it without a password, saved as {name}."
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except zipfile.BadZipFile:
        raise ExtractionError(f"The file could not be read as {name}: it is damaged or not a {name} file.") from None
    total = sum(entry.file_size for entry in entries)
    xml = sum(entry.file_size for entry in entries if entry.filename.endswith((".xml", ".rels")))
    if len(entries) > MAX_ZIP_ENTRIES or total > MAX_UNZIPPED_BYTES or xml > MAX_UNZIPPED_XML_BYTES:
        raise ExtractionError(f"This {name} file expands to more than can be read: split it into smaller files.")


_HEADING_STYLE = re.compile(r"heading (\d)$", re.IGNORECASE)


def _read_docx(data: bytes) -> Extracted:
    import docx
    from docx.table import Table

    _check_zip(data, "docx")
    document = docx.Document(io.BytesIO(data))
    builder = _Builder()
    items: list[str] = []

    def flush_list() -> None:
        builder.add(normalise_lines(items), "list")
        items.clear()

    for item in document.iter_inner_content():
        if isinstance(item, Table):
            flush_list()
            builder.table(_docx_rows(item))
            continue
        style = (item.style.name if item.style is not None else "") or ""
        heading = _HEADING_STYLE.match(style)
        if style == "Title" or heading:
            flush_list()
            builder.heading(item.text, int(heading.group(1)) if heading else 1)
        elif style.startswith("List"):
            items.append("- " + item.text)
        else:
            flush_list()
            builder.paragraph(item.text)
    flush_list()
    return Extracted(blocks=builder.blocks)


def _docx_rows(table: Table) -> Iterator[list[str]]:
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans.
            if cell._tc is not previous:
                cells.append(cell.text)
            previous = cell._tc
        yield cells


def _read_pptx(data: bytes) -> Extracted:
    from pptx import Presentation

    _check_zip(data, "pptx")
    presentation = Presentation(io.BytesIO(data))
    builder = _Builder()
    count = 0
    for number, slide in enumerate(presentation.slides, start=1):
        count = number
        title_shape = slide.shapes.title
        title = normalise(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
        lines = [title] if title else []
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if shape.has_text_frame:
                lines.extend(paragraph.text for paragraph in shape.text_frame.paragraphs)
            if getattr(shape, "has_table", False):
                lines.extend(" | ".join(normalise(cell.text) for cell in row.cells) for row in shape.table.rows)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = normalise(slide.notes_slide.notes_text_frame.text)
            if notes:
                lines.append(f"Notes: {notes}")
        builder.add(normalise_lines(lines), "slide", page=number, section=title or f"Slide {number}")
    return Extracted(blocks=builder.blocks, pages=count)


def _read_xlsx(data: bytes) -> Extracted:
    from openpyxl import load_workbook

    _check_zip(data, "xlsx")
    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    builder = _Builder()
    try:
        for number, sheet in enumerate(workbook.worksheets, start=1):
            rows = sheet.iter_rows(values_only=True, max_col=MAX_SHEET_COLUMNS)
            builder.table(_bounded_rows(rows, sheet.title), page=number, section=normalise(sheet.title) or None)
        count = len(workbook.worksheets)
    finally:
        workbook.close()
    return Extracted(blocks=builder.blocks, pages=count)


def _bounded_rows(rows: Iterable[Iterable[object]], sheet: str) -> Iterator[Iterable[object]]:
    for index, row in enumerate(rows):
        if index >= MAX_SHEET_ROWS:
            raise ExtractionError(
                f"The sheet {sheet!r} has more than {MAX_SHEET_ROWS:,} rows: split it into smaller files."
            )
        yield row


# Text formats ----------------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractionError("The file is not UTF-8 text: save it as UTF-8 and upload it again.") from None


def _read_csv(data: bytes) -> Extracted:
    text = _decode(data)
    sample = text[:65_536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    builder = _Builder()
    builder.table(_bounded_rows(csv.reader(io.StringIO(text), dialect), "CSV"))
    return Extracted(blocks=builder.blocks)


def _read_text(data: bytes) -> Extracted:
    builder = _Builder()
    for paragraph in _BLANK_LINE.split(_decode(data).replace("\r\n", "\n").replace("\r", "\n")):
        builder.paragraph(paragraph)
    return Extracted(blocks=builder.blocks)


_HTML_DROPPED = frozenset({"script", "style", "nav", "noscript", "template", "head", "svg", "iframe", "form"})
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HTML_INLINE = frozenset(
    {"a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "i", "kbd", "mark", "q", "s", "samp",
     "small", "span", "strong", "sub", "sup", "time", "u", "var", "wbr", "font", "label"}
)  # fmt: skip


def _read_html(data: bytes) -> Extracted:
    from bs4 import BeautifulSoup, Tag
    from bs4.element import NavigableString

    soup = BeautifulSoup(data, "html.parser")
    builder = _Builder()
    buffer: list[str] = []

    def flush() -> None:
        # Text nodes carry their own spaces: joined as they are, "<b>guide</b>." stays "guide.".
        builder.paragraph("".join(buffer))
        buffer.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if type(child) is NavigableString:
                buffer.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue  # comments, doctypes, processing instructions
            name = child.name.lower()
            if name in _HTML_DROPPED:
                continue
            if name in _HTML_INLINE:
                walk(child)
            elif name == "br":
                buffer.append(" ")
            elif name in _HTML_HEADINGS:
                flush()
                builder.heading(child.get_text(), _HTML_HEADINGS[name])
            elif name == "pre":
                flush()
                builder.add(normalise_code(child.get_text()), "code")
            elif name in {"ul", "ol"}:
                flush()
                builder.add(
                    normalise_lines("- " + item.get_text(" ") for item in child.find_all("li", recursive=False)),
                    "list",
                )
            elif name == "table":
                flush()
                builder.table(
                    [cell.get_text(" ") for cell in row.find_all(["td", "th"], recursive=False)]
                    for row in child.find_all("tr")
                )
            else:
                flush()
                walk(child)
                flush()

    walk(soup)
    flush()
    return Extracted(blocks=builder.blocks)


def _read_markdown(data: bytes) -> Extracted:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(_decode(data))
    builder = _Builder()
    items: list[str] = []
    rows: list[list[str]] = []
    lists = 0
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            builder.heading(_inline_text(tokens[index + 1]), int(token.tag[1]))
        elif token.type in {"bullet_list_open", "ordered_list_open"}:
            lists += 1
        elif token.type in {"bullet_list_close", "ordered_list_close"}:
            lists -= 1
            if not lists:
                # Items are normalised one by one, so that the indentation of nested ones stays.
                builder.add("\n".join(items), "list")
                items.clear()
        elif token.type in {"fence", "code_block"}:
            builder.add(normalise_code(token.content), "code")
        elif token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and rows and tokens[index - 1].type in {"th_open", "td_open"}:
            rows[-1].append(_inline_text(token))
        elif token.type == "table_close":
            builder.table(rows)
            rows = []
        elif token.type == "inline" and tokens[index - 1].type == "paragraph_open":
            if lists:
                items.append("  " * (lists - 1) + "- " + normalise(_inline_text(token)))
            else:
                builder.paragraph(_inline_text(token))
        elif token.type == "html_block":
            from bs4 import BeautifulSoup

            builder.paragraph(BeautifulSoup(token.content, "html.parser").get_text(" "))
    return Extracted(blocks=builder.blocks)


def _inline_text(token: Token) -> str:
    """The words of an inline token: emphasis and link markup dropped, an image's alternative text kept."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in {"text", "code_inline"}:
            parts.append(child.content)
        elif child.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


_READERS: dict[Format, Callable[[bytes], Extracted]] = {
    "pdf": _read_pdf,
    "docx": _read_docx,
    "pptx": _read_pptx,
    "xlsx": _read_xlsx,
    "csv": _read_csv,
    "html": _read_html,
    "markdown": _read_markdown,
    "text": _read_text,
}
