"""GPT-2's reversible byte <-> printable-character mapping used by byte-level BPE.

Every byte value 0..255 is given one printable Unicode character, so that any UTF-8 byte string can be
written as a string of "byte characters" that contains no whitespace or control characters (a space
becomes ``Ġ``, a newline ``Ċ``). Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map
to themselves; the remaining 68 bytes map, in increasing byte order, to U+0100, U+0101, ... This is the
table of GPT-2's ``bytes_to_unicode`` and of HF ``tokenizers``' ``ByteLevel`` pre-tokenizer.
"""

from __future__ import annotations


def _byte_to_char() -> dict[int, str]:
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    others = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


BYTE_TO_CHAR: dict[int, str] = _byte_to_char()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}
# The initial alphabet in the order HF's BpeTrainer assigns it ids: sorted by code point.
ALPHABET: tuple[str, ...] = tuple(sorted(CHAR_TO_BYTE))


def chars_to_bytes(token: str) -> bytes:
    """The bytes a string of byte characters stands for; ``KeyError`` on a character outside the alphabet."""
    return bytes([CHAR_TO_BYTE[c] for c in token])
