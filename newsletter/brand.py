"""Brand colours: WCAG contrast, and the accent's variant for the dark colour scheme.

The accent colour is the editor's (setting `brand_accent`); readers must be able to read
what is drawn in it in both schemes, so the light one is checked when settings load and the
dark one is derived here rather than asked for.

The WCAG 2.1 formula is written out here rather than taken from a colour library: the one
that does it (coloraide) takes ~0.45 s to import, which every `newsletter build` would pay
against its 0.5 s budget; the tests check these figures against coloraide's.
"""

from __future__ import annotations

from functools import lru_cache

AA = 4.5  # WCAG 2.x AA for body text
CARD_LIGHT = "#ffffff"  # the card background in the light scheme (templates/_layout.mjml.j2)
CARD_DARK = "#1c2127"  # ... and in the dark scheme


def _channels(colour: str) -> tuple[int, int, int]:
    """#rrggbb as three 0-255 channels (config.py accepts no other form)."""
    value = colour.removeprefix("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def luminance(colour: str) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _channels(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    """The WCAG 2.1 contrast ratio of two #rrggbb colours (1 to 21)."""
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _towards_white(colour: str, share: float) -> str:
    mixed = (round(c + (255 - c) * share) for c in _channels(colour))
    return "#" + "".join(f"{c:02x}" for c in mixed)


@lru_cache(maxsize=16)
def dark_variant(accent: str, background: str = CARD_DARK, target: float = AA + 0.5) -> str:
    """`accent` mixed towards white until it reads on the dark card: same hue, lighter.

    The margin over AA keeps a colour that just passes from failing after a client's
    rounding; white itself (16:1 on the dark card) ends the search at worst.
    """
    for step in range(21):
        mixed = _towards_white(accent, step / 20)
        if contrast(mixed, background) >= target:
            return mixed
    return "#ffffff"
