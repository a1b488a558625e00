"""The CJK font of report PDFs: an embedded TrueType font if one is found, else STSong-Light.

Patient names, findings and signers' names are Chinese, and a PDF printed
years later at another hospital must show them. An embedded (subset)
TrueType font renders the same everywhere and carries a ToUnicode map, so
the text can be searched and copied. Without one, reportlab's CID font
``STSong-Light`` (Adobe-GB1) is named but not embedded: every PDF reader
supplies it, so the PDF still works on a machine with no CJK font installed.

reportlab embeds TrueType outlines only: the CFF-outline OpenType fonts of
``fonts-noto-cjk`` are tried last and skipped when they cannot be loaded.
Some fallback fonts (Droid Sans Fallback) have no Latin letters;
``ReportFont.markup`` sets the characters a font lacks in Helvetica.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

__all__ = ["CID_FONT", "DEBIAN_CJK_FONTS", "LATIN_FONT", "ReportFont", "load_report_font"]

logger = logging.getLogger(__name__)

CID_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"

# Debian packages, most complete (Latin and CJK in one font) first.
DEBIAN_CJK_FONTS: tuple[Path, ...] = tuple(
    Path(path)
    for path in (
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # fonts-wqy-zenhei
        "/usr/share/fonts/truetype/arphic/uming.ttc",  # fonts-arphic-uming
        "/usr/share/fonts/truetype/arphic/ukai.ttc",  # fonts-arphic-ukai
        "/usr/share/fonts/truetype/arphic-gbsn00lp/gbsn00lp.ttf",  # fonts-arphic-gbsn00lp
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # fonts-droid-fallback
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk (CFF: usually skipped)
        "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    )
)

_lock = threading.Lock()
_loaded: dict[Path | None, ReportFont] = {}


@dataclass(frozen=True, slots=True)
class ReportFont:
    """A font registered with reportlab under ``name``."""

    name: str
    path: Path | None  # None: the CID font, named in the PDF but not embedded
    glyphs: frozenset[int] | None = field(default=None, repr=False)  # None: covers every character

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def covers(self, character: str) -> bool:
        return self.glyphs is None or ord(character) in self.glyphs

    def markup(self, text: str) -> str:
        """``text`` as reportlab paragraph markup: escaped, characters the font lacks in Helvetica."""
        runs: list[tuple[bool, list[str]]] = []
        for character in text:
            covered = self.covers(character)
            if runs and (runs[-1][0] == covered or character.isspace()):
                runs[-1][1].append(character)
            else:
                runs.append((covered, [character]))
        out = []
        for covered, characters in runs:
            run = escape("".join(characters)).replace("\n", "<br/>")
            out.append(run if covered else f'<font name="{LATIN_FONT}">{run}</font>')
        return "".join(out)


def _register_truetype(path: Path) -> ReportFont:
    name = "TeleconsultCJK-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
    font = TTFont(name, str(path), subfontIndex=0)
    pdfmetrics.registerFont(font)
    return ReportFont(name, path, frozenset(font.face.charToGlyph))


def _cid_font() -> ReportFont:
    if CID_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    return ReportFont(CID_FONT, None)


def load_report_font(
    configured: Path | None = None, candidates: Sequence[Path] = DEBIAN_CJK_FONTS
) -> ReportFont:
    """The configured font, else the first loadable candidate, else the CID font; loaded once."""
    with _lock:
        for path in ([configured] if configured is not None else []) + list(candidates):
            if not path.is_file():
                continue
            if path in _loaded:
                return _loaded[path]
            try:
                font = _register_truetype(path)
            except Exception as exc:  # reportlab raises TTFError, struct and index errors alike
                level = logging.WARNING if path == configured else logging.DEBUG
                logger.log(level, "report font %s cannot be embedded (%s); trying the next", path, exc)
                continue
            _loaded[path] = font
            logger.info("report PDFs embed the font %s", path)
            return font
        if None not in _loaded:
            _loaded[None] = _cid_font()
            logger.info("no embeddable CJK font found: report PDFs name the reader's %s", CID_FONT)
        return _loaded[None]
