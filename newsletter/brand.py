"""Brand colours: WCAG contrast, and the accent's variant for the dark colour scheme.

The accent colour is the editor's (setting `brand_accent`); readers must be able to read
what is drawn in it in both schemes, so the light one is checked when settings load and the
dark one is derived here rather than asked for.
"""

from __future__ import annotations

from functools import lru_cache

from coloraide import Color

AA = 4.5  # WCAG 2.x AA for body text
CARD_LIGHT = "#ffffff"  # the card background in the light scheme (templates/_layout.mjml.j2)
CARD_DARK = "#1c2127"  # ... and in the dark scheme


def contrast(foreground: str, background: str) -> float:
    """The WCAG 2.1 contrast ratio of two CSS colours (1 to 21)."""
    return float(Color(foreground).contrast(Color(background), method="wcag21"))


@lru_cache(maxsize=16)
def dark_variant(accent: str, background: str = CARD_DARK, target: float = AA + 0.5) -> str:
    """`accent` mixed towards white until it reads on the dark card: same hue, lighter.

    The margin over AA keeps a colour that just passes from failing after a client's
    rounding; white itself (21:1 on the dark card) ends the search at worst.
    """
    colour = Color(accent).convert("srgb")
    for step in range(21):
        mixed = colour.mix("white", step / 20, space="srgb")
        if contrast(mixed.to_string(hex=True), background) >= target:
            return str(mixed.to_string(hex=True))
    return "#ffffff"
