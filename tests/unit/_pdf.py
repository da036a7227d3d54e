"""Text read back from a statement PDF, page by page, with pypdf (embedded TrueType text
is glyph ids mapped back through the font's ToUnicode table, not readable bytes)."""

from __future__ import annotations

import io

from pypdf import PdfReader


def pdf_pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def pdf_text(data: bytes) -> str:
    return "\n".join(pdf_pages(data))
