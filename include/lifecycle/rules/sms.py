"""SMS length and segment count: what a message costs before it is sent.

A text that fits the GSM 03.38 alphabet is sent as GSM-7: 160 septets in one segment, 153 per
segment once it is split (the rest carries the concatenation header). The extension table's
characters (``^ { } \\ [ ~ ] | €`` and form feed) take an escape septet each, so they count 2,
and a split never separates the escape from its character. Anything else (Cyrillic, emoji,
a curly apostrophe) turns the whole text into UCS-2: 70 UTF-16 code units in one segment, 67 per
segment once split; a character outside the basic plane (most emoji) takes 2 units and is
never split across segments either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic character set (the escape 0x1B is left out: it is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as escape + character, 2 septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

LIMITS: dict[Encoding, tuple[int, int]] = {
    # (one segment, per segment of a split message)
    "GSM-7": (160, 153),
    "UCS-2": (70, 67),
}


@dataclass(frozen=True)
class SmsInfo:
    """How a text goes out as SMS."""

    encoding: Encoding
    characters: int  # len() of the text
    length: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    @property
    def per_segment(self) -> int:
        single, multi = LIMITS[self.encoding]
        return single if self.segments <= 1 else multi


def encoding_of(text: str) -> Encoding:
    """GSM-7 when every character is in the GSM alphabet (basic or extension), else UCS-2."""
    ok = GSM7_BASIC | GSM7_EXTENSION
    return "GSM-7" if all(ch in ok for ch in text) else "UCS-2"


def _units(ch: str, encoding: Encoding) -> int:
    if encoding == "GSM-7":
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def analyze(text: str) -> SmsInfo:
    """Encoding, length in the encoding's units and the number of segments of ``text``."""
    encoding = encoding_of(text)
    units = [_units(ch, encoding) for ch in text]
    length = sum(units)
    single, multi = LIMITS[encoding]
    if length <= single:
        return SmsInfo(encoding, len(text), length, 1)
    # Fill segments greedily; a 2-unit character that does not fit moves to the next one.
    segments, used = 1, 0
    for u in units:
        if used + u > multi:
            segments += 1
            used = 0
        used += u
    return SmsInfo(encoding, len(text), length, segments)


def segments(text: str) -> int:
    """Number of SMS segments ``text`` is billed as."""
    return analyze(text).segments


def max_length(encoding: Encoding, max_segments: int) -> int:
    """The longest text (in the encoding's units) that fits in ``max_segments`` segments."""
    single, multi = LIMITS[encoding]
    return single if max_segments <= 1 else multi * max_segments
