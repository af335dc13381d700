"""Empty signature fields (ISO 32000-1 §12.7.4.5, §12.8): one AcroForm field of
type /Sig per party, merged with its widget annotation, placed in that
party's signature box.

The fields are written into the original file, not appended as an update, so
the unsigned PDF has one revision and signing (pyHanko, PAdES) only fills
``/V`` and the widget's appearance: the page content stream never changes.
reportlab's AcroForm knows text fields, check boxes and choices but not
signatures, so the widget dictionary is built here the same way reportlab
builds its own fields (``_addAnnotation`` plus ``acroForm.fields``).
"""
from __future__ import annotations

from dataclasses import dataclass

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFString
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable

from services.documents.rendering.content import Party

#: Words drawn in each box: "<role>（签名）：<name>"; the tooltip "<role>签名".
SIGNATURE_LABEL = "（签名）："
SIGNATURE_TOOLTIP = "签名"

#: Annotation flag Print (bit 3, ISO 32000-1 Table 165): the signature shows when printed.
ANNOTATION_PRINT = 4


@dataclass(frozen=True)
class SignatureBoxLayout:
    columns: int = 2
    box_height: float = 36 * mm
    gap: float = 6 * mm
    padding: float = 3 * mm
    label_size: float = 10.5
    #: height of the label line above the field area
    label_height: float = 8 * mm


def add_signature_field(canv: Canvas, name: str, tooltip: str, x: float, y: float, width: float, height: float) -> None:
    """Add an empty /Sig field with its widget at (x, y, width, height) in the
    current coordinate system of ``canv`` (translated to page coordinates)."""
    x0, y0 = canv.absolutePosition(x, y)
    x1, y1 = canv.absolutePosition(x + width, y + height)
    doc = canv._doc
    widget = PDFDictionary({
        "Type": PDFName("Annot"),
        "Subtype": PDFName("Widget"),
        "FT": PDFName("Sig"),
        "T": PDFString(name),
        "TU": PDFString(tooltip),
        "F": ANNOTATION_PRINT,
        "Rect": PDFArray([round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)]),
        "P": doc.thisPageRef(),
    })
    form = canv.acroForm
    canv._addAnnotation(widget)
    form.fields.append(form.getRef(widget))


class SignaturePanel(Flowable):
    """A grid of signature boxes, one per party: a label line (role and name)
    and, below it, the area the party's signature field covers."""

    def __init__(self, parties: tuple[Party, ...], font_runs, layout: SignatureBoxLayout = SignatureBoxLayout()):
        super().__init__()
        self.parties = parties
        #: callable text -> [(face, run)]: names may need fallback faces
        self.font_runs = font_runs
        self.layout = layout

    def _rows(self) -> int:
        return -(-len(self.parties) // self.layout.columns)

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self.width = available_width
        rows = self._rows()
        self.height = rows * self.layout.box_height + (rows - 1) * self.layout.gap
        return self.width, self.height

    def draw(self) -> None:
        lay = self.layout
        box_width = (self.width - (lay.columns - 1) * lay.gap) / lay.columns
        canv = self.canv
        for index, party in enumerate(self.parties):
            row, column = divmod(index, lay.columns)
            x = column * (box_width + lay.gap)
            y = self.height - (row + 1) * lay.box_height - row * lay.gap
            canv.setStrokeColor(colors.black)
            canv.setLineWidth(0.6)
            canv.rect(x, y, box_width, lay.box_height)
            self._draw_label(x + lay.padding, y + lay.box_height - lay.padding - lay.label_size,
                             box_width - 2 * lay.padding, f"{party.role}{SIGNATURE_LABEL}{party.name}")
            field_top = y + lay.box_height - lay.label_height
            canv.setStrokeColor(colors.lightgrey)
            canv.setDash(2, 2)
            canv.rect(x + lay.padding, y + lay.padding, box_width - 2 * lay.padding, field_top - y - 2 * lay.padding)
            canv.setDash()
            add_signature_field(canv, party.signature_field, f"{party.role}{SIGNATURE_TOOLTIP}",
                                x + lay.padding, y + lay.padding,
                                box_width - 2 * lay.padding, field_top - y - 2 * lay.padding)

    def _draw_label(self, x: float, y: float, max_width: float, text: str) -> None:
        runs = self.font_runs(text)
        size = self.layout.label_size
        width = sum(self.canv.stringWidth(run, face, size) for face, run in runs)
        if width > max_width:
            # a long name (a company's) shrinks to fit rather than run into the next box
            size = size * max_width / width
        for face, run in runs:
            self.canv.setFont(face, size)
            self.canv.drawString(x, y, run)
            x += self.canv.stringWidth(run, face, size)
