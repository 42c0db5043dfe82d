from __future__ import annotations

import pytest

from lifecycle.rules.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    analyze,
    encoding_of,
    max_length,
    segments,
)


@pytest.mark.parametrize(
    ("text", "encoding", "length", "parts"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # the extension table counts 2
        ("€" + "a" * 159, "GSM-7", 161, 2),
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        ("a" * 69 + "ж", "UCS-2", 70, 1),  # one Cyrillic letter makes it all UCS-2
        ("Michał", "UCS-2", 6, 1),  # ł is not in the GSM alphabet
        ("Jürgen: 10€ ^_^ [ok]", "GSM-7", 25, 1),  # 20 characters, 5 of them count 2
        ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: 2 units each
        ("it’s", "UCS-2", 4, 1),  # a curly apostrophe
    ],
)
def test_encoding_length_and_segments(text, encoding, length, parts):
    info = analyze(text)
    assert (info.encoding, info.length, info.segments) == (encoding, length, parts)
    assert segments(text) == parts


def test_a_two_unit_character_is_never_split_across_segments():
    # 306 septets would fill two 153-septet segments exactly, but the escaped '€' at septets
    # 153-154 cannot be split: it moves to the second segment, and the text needs a third.
    text = "a" * 152 + "€" + "a" * 152
    assert analyze(text).length == 306
    assert segments(text) == 3
    assert segments("a" * 151 + "€" + "a" * 153) == 2
    emoji = "ж" * 66 + "😀" + "ж" * 66  # 134 units, the pair straddles unit 67
    assert analyze(emoji).length == 134 and segments(emoji) == 3


def test_alphabet_tables():
    assert len(GSM7_BASIC) == 127  # 128 code points minus the escape
    assert len(GSM7_EXTENSION) == 10
    assert encoding_of("Hello @ £$¥ ÄÖÑÜ§¿ äöñüà") == "GSM-7"
    assert encoding_of("Привіт") == "UCS-2"
    assert max_length("UCS-2", 2) == 134 and max_length("GSM-7", 2) == 306
    assert max_length("GSM-7", 1) == 160 and max_length("UCS-2", 1) == 70
    assert analyze("ж" * 71).per_segment == 67 and analyze("a").per_segment == 160
