"""Terminal output that text from subscribers and files cannot steer (cli.py's console).

A subscriber's name, an imported cell or an article title can carry ESC and CSI sequences
(clear the screen, retitle the window, fake a line of output), other C0/C1 controls, or
bidi overrides that make text read differently than it is. Printed as is, they act on
the editor's terminal. Here they are shown escaped (``\\x1b``, ``\\u202e``), Rich markup
(``[red]``) and emoji codes (``:bomb:``) are printed literally.
"""

from __future__ import annotations

import re
from typing import IO, TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import HighlighterType, JustifyMethod, OverflowMethod
    from rich.style import Style

# C0 controls but TAB and LF, DEL, C1 controls; then the bidi embeddings, overrides,
# isolates and marks, and the Unicode line and paragraph separators.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_INVISIBLE = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}{_INVISIBLE}]")
_UNSAFE_IN_A_LINE = re.compile(f"[\t\n{_CONTROLS}{_INVISIBLE}]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, one_line: bool = False) -> str:
    """`text` with every control and bidi character shown as an escape; with `one_line`,
    line breaks and tabs too (for a value that must not look like more output)."""
    return (_UNSAFE_IN_A_LINE if one_line else _UNSAFE).sub(_escaped, text)


class SafeConsole(Console):
    """A Rich console for user-supplied text: no markup, no emoji codes, no highlighting,
    and every string it is given (printed, or a table cell) passed through `safe`."""

    def __init__(
        self,
        *,
        stderr: bool = False,
        file: IO[str] | None = None,
        force_terminal: bool | None = None,
    ) -> None:
        super().__init__(
            stderr=stderr,
            file=file,
            force_terminal=force_terminal,
            highlight=False,
            soft_wrap=True,
            markup=False,
            emoji=False,
        )

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        return super().render_str(
            safe(text),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=False,
            markup=False,
            highlight=highlight,
            highlighter=highlighter,
        )
