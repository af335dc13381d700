"""Render :class:`DocumentContent` to a reproducible A4 PDF (ISO 32000-1) with
embedded subset TrueType CJK fonts and empty signature fields.

Reproducible: the same content gives the same bytes, in any process. reportlab
runs in invariant mode; the Info dates are the content's ``document_date``
(00:00 China Standard Time) and the trailer /ID is the first 16 bytes of the
content hash, so nothing comes from the clock or from randomness.

No glyph is ever dropped: every drawn string is checked against the font
stack first and an uncovered character is refused with ``InvalidInput``
(rule ``glyph_missing``) naming the field and the characters.
"""
from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfdoc import PDFText
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from services.common.errors import InvalidInput
from services.common.fonts import FontStack, default_font_stack, describe_characters
from services.documents.rendering.content import AttachmentEntry, DocumentContent, ScheduleTable, Section
from services.documents.rendering.signature_fields import SignaturePanel

#: Fixed words the renderer itself draws; they are checked like content.
LABELS = {
    "parties_heading": "当事人",
    "party_columns": ("身份", "姓名", "证件号码", "联系电话"),
    "document_id": "文书编号：",
    "document_date": "日期：",
    "amount_words": "（大写）",
    "amount_figures": "（小写）",
    "remark": "备注",
    "attachments": "附件",
    "attachment_columns": ("缩略图", "名称", "SHA-256"),
    "no_thumbnail": "（无缩略图）",
    "signatures": "签署",
    # the customary close of a Chinese contract's text: nothing may be added below it
    "end_of_text": "（以下无正文）",
    "page": "第 {n} 页，共 ",
    "page_total": "{n} 页",
}


@dataclass(frozen=True)
class PageLayout:
    page_size: tuple[float, float] = A4
    margin: float = 20 * mm
    footer_y: float = 12 * mm
    body_size: float = 10.5
    heading_size: float = 12.5
    title_size: float = 20
    small_size: float = 8
    thumbnail_box: float = 28 * mm
    #: China Standard Time: the document date is a calendar date in China
    utc_offset: str = "+08'00'"


class _DocumentCanvas(Canvas):
    """A canvas whose Info dates and /ID come from the document, and which
    fills in the page total after the last page (a form XObject every
    footer refers to before the total is known)."""

    TOTAL_FORM = "esignPageTotal"

    def __init__(self, *args, pdf_date: str, pdf_id: bytes, footer_font: str, footer_size: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.setDateFormatter(lambda *_: pdf_date)
        id_text = PDFText(pdf_id, enc="raw").format(self._doc)
        # reportlab derives /ID from a digest it keeps; setting the cached value
        # is the only way to make it the content's (ISO 32000-1 §14.4).
        self._doc._ID = b"\n[" + id_text + id_text + b"]\n"
        self._footer_font = footer_font
        self._footer_size = footer_size

    def save(self) -> None:
        pages = self.getPageNumber() - 1 if not self._code else self.getPageNumber()
        self.beginForm(self.TOTAL_FORM)
        self.setFont(self._footer_font, self._footer_size)
        self.drawString(0, 0, LABELS["page_total"].format(n=pages))
        self.endForm()
        super().save()


def render_pdf(content: DocumentContent, fonts: FontStack | None = None, layout: PageLayout = PageLayout()) -> bytes:
    """Render ``content`` to PDF bytes. Raises ``InvalidInput`` on a structural
    rule (``check_structure``) or a character the fonts cannot draw."""
    fonts = fonts or default_font_stack()
    content.check_structure()
    check_glyphs(content, fonts)
    return _Renderer(content, fonts, layout).build()


def check_glyphs(content: DocumentContent, fonts: FontStack) -> None:
    for field, text in content.texts():
        missing = fonts.coverage_check(text)
        if missing:
            raise InvalidInput(field, "glyph_missing",
                               f"the document fonts cannot draw {describe_characters(missing)}; "
                               "expected characters the installed CJK fonts cover")


def pdf_id_for(content: DocumentContent) -> bytes:
    """The 16-byte PDF /ID: the head of the content hash."""
    return hashlib.sha256(content.canonical_bytes()).digest()[:16]


class _Renderer:
    def __init__(self, content: DocumentContent, fonts: FontStack, layout: PageLayout):
        self.content = content
        self.fonts = fonts
        self.layout = layout
        face = fonts.primary
        self.body = ParagraphStyle("body", fontName=face, fontSize=layout.body_size,
                                   leading=layout.body_size * 1.55, wordWrap="CJK")
        self.cell_style = ParagraphStyle("cell", parent=self.body, leading=layout.body_size * 1.4)
        self.cell_center = ParagraphStyle("cell_center", parent=self.cell_style, alignment=TA_CENTER)
        self.small = ParagraphStyle("small", parent=self.body, fontSize=layout.small_size,
                                    leading=layout.small_size * 1.4)
        self.heading = ParagraphStyle("heading", parent=self.body, fontSize=layout.heading_size,
                                      leading=layout.heading_size * 1.5, spaceBefore=4 * mm, spaceAfter=1.5 * mm)
        self.title = ParagraphStyle("title", parent=self.body, fontSize=layout.title_size,
                                    leading=layout.title_size * 1.4, alignment=TA_CENTER, spaceAfter=2 * mm)
        self.meta = ParagraphStyle("meta", parent=self.small, alignment=TA_RIGHT)

    # -- text ----------------------------------------------------------------

    def markup(self, text: str) -> str:
        """Paragraph markup for ``text``: escaped, line breaks kept, and runs the
        primary face lacks wrapped in the fallback face that draws them."""
        parts = []
        for face, run in self.fonts.runs(text):
            run_markup = escape(run).replace("\n", "<br/>")
            parts.append(run_markup if face == self.fonts.primary else f'<font face="{face}">{run_markup}</font>')
        return "".join(parts)

    def para(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        return Paragraph(self.markup(text), style or self.body)

    def cell(self, text: str, width: float, style: ParagraphStyle | None = None):
        """A table cell: the plain string when the primary face draws all of it on one line
        within the column (the table draws it directly, aligned by the grid's ALIGN), else a
        Paragraph that wraps and switches faces. Most cells (dates, amounts, names) are plain,
        and a Paragraph per cell was most of a schedule's rendering time."""
        style = style or self.cell_style
        room = width - 12  # the table's left and right padding (6 points each, reportlab's default)
        if ("\n" not in text and text.strip() == text and text
                and all(face == self.fonts.primary for face, _ in self.fonts.runs(text))
                and stringWidth(text, self.fonts.primary, style.fontSize) <= room):
            return text
        return self.para(text, style)

    # -- blocks --------------------------------------------------------------

    def grid(self, data, col_widths, header: bool = False, repeat_rows: int = 0, centred: tuple = ()) -> Table:
        """A table; ``centred``: ((col0, row0), (col1, row1)) ranges whose plain-string cells are centred."""
        table = Table(data, colWidths=col_widths, repeatRows=repeat_rows, hAlign="LEFT")
        commands = [
            # without it the Table sets Helvetica, an unembedded font, in the page resources
            ("FONT", (0, 0), (-1, -1), self.fonts.primary, self.layout.body_size),
            ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("TOPPADDING", (0, 0), (-1, -1), 2.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 3.5),
        ]
        if header:
            commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.9, 0.9)))
        commands += [("ALIGN", start, end, "CENTER") for start, end in centred]
        table.setStyle(TableStyle(commands))
        return table

    def header(self) -> list:
        c = self.content
        date_text = f"{c.document_date.year}年{c.document_date.month}月{c.document_date.day}日"
        return [
            self.para(c.title, self.title),
            self.para(f"{LABELS['document_id']}{c.document_id}　{LABELS['document_date']}{date_text}", self.meta),
        ]

    def parties(self) -> list:
        w = self.width
        widths = [0.16 * w, 0.24 * w, 0.36 * w, 0.24 * w]
        rows = [[self.cell(h, width, self.cell_center)
                 for h, width in zip(LABELS["party_columns"], widths, strict=True)]]
        for p in self.content.parties:
            rows.append([self.cell(value, width, style) for value, width, style in zip(
                (p.role, p.name, p.id_number, p.phone), widths, (self.cell_center, None, None, None), strict=True)])
        return [self.para(LABELS["parties_heading"], self.heading),
                self.grid(rows, widths, header=True, centred=(((0, 0), (-1, 0)), ((0, 1), (0, -1))))]

    def section(self, section: Section) -> list:
        flowables = [self.para(section.heading, self.heading)]
        if section.rows:
            widths = [0.3 * self.width, 0.7 * self.width]
            rows = [[self.cell(label, widths[0]), self.cell(value, widths[1])] for label, value in section.rows]
            table = self.grid(rows, widths)
            table.setStyle(TableStyle([("BACKGROUND", (0, 0), (0, -1), colors.Color(0.95, 0.95, 0.95))]))
            flowables.append(table)
        for text in section.paragraphs:
            flowables += [Spacer(0, 1.5 * mm), self.para(text)]
        return flowables

    def amount(self) -> list:
        c = self.content
        if not c.amount_words:
            return []
        text = f"{c.amount_label}{LABELS['amount_words']}：{c.amount_words}"
        if c.amount_figures:
            text += f"　{LABELS['amount_figures']}：{c.amount_figures}"
        box = self.grid([[self.para(text)]], [self.width])
        box.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.Color(0.97, 0.97, 0.92)),
                                 ("TOPPADDING", (0, 0), (-1, -1), 6), ("BOTTOMPADDING", (0, 0), (-1, -1), 7)]))
        return [Spacer(0, 4 * mm), box]

    def schedule(self, schedule: ScheduleTable) -> list:
        width = self.width / len(schedule.columns)
        header = [self.cell(col, width, self.cell_center) for col in schedule.columns]
        rows = [[self.cell(cell, width, self.cell_center) for cell in row] for row in schedule.rows]
        flowables = [self.para(schedule.caption, self.heading),
                     self.grid([header] + rows, [width] * len(schedule.columns), header=True, repeat_rows=1,
                               centred=(((0, 0), (-1, -1)),))]
        if schedule.note:
            flowables += [Spacer(0, 1.5 * mm), self.para(schedule.note, self.small)]
        return flowables

    def remark(self) -> list:
        if not self.content.remark:
            return []
        return [self.para(LABELS["remark"], self.heading), self.para(self.content.remark)]

    def thumbnail(self, entry: AttachmentEntry):
        if entry.thumbnail_jpeg is None:
            return self.para(LABELS["no_thumbnail"], self.small)
        reader = ImageReader(io.BytesIO(entry.thumbnail_jpeg))
        width, height = reader.getSize()
        scale = min(self.layout.thumbnail_box / width, self.layout.thumbnail_box / height)
        return Image(io.BytesIO(entry.thumbnail_jpeg), width=width * scale, height=height * scale)

    def attachments(self) -> list:
        if not self.content.attachments:
            return []
        rows = [[self.para(h, self.cell_center) for h in LABELS["attachment_columns"]]]  # few: kept as they were
        for entry in self.content.attachments:
            # split the hash in two so it wraps at a fixed place, not mid-column
            digest = entry.sha256[:32] + "\n" + entry.sha256[32:]
            rows.append([self.thumbnail(entry), self.para(entry.label, self.cell_style),
                         self.para(digest, self.small)])
        w = self.width
        box = self.layout.thumbnail_box + 6
        return [self.para(LABELS["attachments"], self.heading),
                self.grid(rows, [box, w - box - 0.42 * w, 0.42 * w], header=True, repeat_rows=1)]

    def signatures(self) -> list:
        panel = SignaturePanel(self.content.parties, self.fonts.runs)
        return [Spacer(0, 3 * mm), self.para(LABELS["end_of_text"], self.cell_center),
                KeepTogether([self.para(LABELS["signatures"], self.heading), panel])]

    # -- document ------------------------------------------------------------

    def footer(self, canv: Canvas, _doc) -> None:
        lay = self.layout
        canv.saveState()
        y = lay.footer_y
        x = lay.margin
        for face, run in self.fonts.runs(f"{LABELS['document_id']}{self.content.document_id}"):
            canv.setFont(face, lay.small_size)
            canv.drawString(x, y, run)
            x += canv.stringWidth(run, face, lay.small_size)
        page_text = LABELS["page"].format(n=canv.getPageNumber())
        x = lay.page_size[0] - lay.margin - 30 * mm
        canv.setFont(self.fonts.primary, lay.small_size)
        canv.drawString(x, y, page_text)
        canv.translate(x + canv.stringWidth(page_text, self.fonts.primary, lay.small_size), y)
        canv.doForm(_DocumentCanvas.TOTAL_FORM)
        canv.restoreState()

    def build(self) -> bytes:
        c = self.content
        lay = self.layout
        self.width = lay.page_size[0] - 2 * lay.margin
        story = self.header() + self.parties()
        for section in c.sections:
            story += self.section(section)
        story += self.amount()
        if c.schedule is not None:
            story += self.schedule(c.schedule)
        story += self.remark() + self.attachments() + self.signatures()

        out = io.BytesIO()
        template = SimpleDocTemplate(
            out, pagesize=lay.page_size, leftMargin=lay.margin, rightMargin=lay.margin,
            topMargin=lay.margin, bottomMargin=lay.margin + 4 * mm,
            title=c.title, subject=f"{LABELS['document_id']}{c.document_id}", author="",
            creator="esign documents", keywords=c.content_hash(),
            invariant=1, pageCompression=1,
            initialFontName=self.fonts.primary,
        )
        canvasmaker = functools.partial(
            _DocumentCanvas,
            pdf_date=f"D:{c.document_date:%Y%m%d}000000{lay.utc_offset}",
            pdf_id=pdf_id_for(c),
            footer_font=self.fonts.primary,
            footer_size=lay.small_size,
        )
        template.build(story, onFirstPage=self.footer, onLaterPages=self.footer, canvasmaker=canvasmaker)
        return out.getvalue()
