"""CSS inlining with premailer, configured for MJML output and for working offline."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import cssutils
from premailer import Premailer

DOCTYPE = "<!doctype html>"


def _no_fetch(url: str) -> tuple[None, str]:
    # cssutils follows @import even when premailer is told allow_network=False.
    return None, ""


@lru_cache(maxsize=64)
def _parse_css(css: str) -> Any:
    parser = cssutils.CSSParser(fetcher=_no_fetch, validate=False, raiseExceptions=False)
    return parser.parseString(css)


class _OfflinePremailer(Premailer):  # type: ignore[misc]
    """Premailer whose CSS parser never fetches and never validates."""

    def _parse_css_string(self, css_body: str, validate: bool = True) -> Any:
        return _parse_css(css_body)


@lru_cache(maxsize=1)
def _quiet_cssutils() -> None:
    # cssutils logs "Unknown Property" for every mso-* property MJML emits.
    cssutils.log.setLevel(logging.CRITICAL)
    cssutils.ser.prefs.useMinified()
    # premailer validates inline style attributes even with disable_validation=True
    # (merge_style.csstext_to_pairs ignores the flag), and the first validation compiles
    # cssutils' property regexes: ~100 ms per process for checks we do not want. With no
    # profiles loaded, validation has nothing to check; serialization is unaffected.
    cssutils.profile.removeProfile(all=True)


def inline_css(html: str) -> str:
    """Inline <style> rules into style attributes; keep @media rules with their !important."""
    _quiet_cssutils()
    result = _OfflinePremailer(
        html,
        allow_network=False,
        strip_important=False,  # MJML's responsive @media rules depend on !important
        keep_style_tags=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        remove_classes=False,  # the kept @media rules select by class
        disable_link_rewrites=True,
        exclude_pseudoclasses=True,
        # MJML never floats images, and this pass re-parses every <img> style *with*
        # validation, compiling cssutils' profile regexes: ~100 ms on a cold process.
        align_floating_images=False,
    ).transform(pretty_print=False)
    text = str(result)
    # premailer (lxml) drops the doctype MJML wrote; without it clients use quirks mode.
    if text[:9].lower() != "<!doctype":
        text = f"{DOCTYPE}\n{text}"
    return text
