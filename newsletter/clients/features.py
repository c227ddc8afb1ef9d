"""Which Can I Email features a final HTML uses: its elements, attributes, CSS and images.

HTML through lxml (as the preflight reads it), CSS through tinycss2: inline `style`
attributes as declaration lists, `<style>` blocks as stylesheets, at-rules included.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import tinycss2
from lxml.html import HtmlElement
from tinycss2.ast import (
    AtRule,
    Declaration,
    DimensionToken,
    FunctionBlock,
    IdentToken,
    Node,
    PercentageToken,
    QualifiedRule,
)


@dataclass(frozen=True)
class Use:
    """One use of a feature: the dataset slug, what was written, and where (None: a rule in
    a <style> block, which applies to no single element)."""

    slug: str
    detail: str
    element: HtmlElement | None


_SEMANTIC = {"article", "aside", "details", "figcaption", "figure", "footer", "header", "main"}
_SEMANTIC |= {"mark", "nav", "section", "summary", "time"}
_TAGS = {"h1": "html-h1-h6", "ul": "html-lists", "ol": "html-lists", "dl": "html-lists"}
_TAGS |= {f"h{n}": "html-h1-h6" for n in range(2, 7)} | {"s": "html-strike"}
_TAGS |= dict.fromkeys(_SEMANTIC, "html-semantics")
_ATTRIBUTES = {"loading": "html-loading-attribute"}
_IMAGE_TYPES = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}
_IMAGE_TYPES |= {"svg": "svg", "avif": "avif", "bmp": "bmp", "ico": "ico", "tif": "tiff"}
# Longhands the dataset files under their shorthand's page.
_LONGHANDS = (
    ("margin-", "css-margin"),
    ("padding-", "css-padding"),
    ("border-top-left-radius", "css-border-radius"),
    ("border-top-right-radius", "css-border-radius"),
    ("border-bottom-left-radius", "css-border-radius"),
    ("border-bottom-right-radius", "css-border-radius"),
    ("border-", "css-border"),
    ("font-", "css-font"),
    ("list-style-", "css-list-style"),
)
_DISPLAY = {"flex": "css-display-flex", "inline-flex": "css-display-flex"}
_DISPLAY |= {"grid": "css-display-grid", "inline-grid": "css-display-grid"}
_DISPLAY |= {"none": "css-display-none"}
_FUNCTIONS = {"rgb": "css-rgb", "rgba": "css-rgba", "calc": "css-unit-calc", "var": "css-variables"}
_FUNCTIONS |= {f: f"css-function-{f}" for f in ("min", "max", "clamp")}
_FUNCTIONS |= {"light-dark": "css-function-light-dark"}
_FUNCTIONS |= {g: f"css-{g}" for g in ("linear-gradient", "radial-gradient", "conic-gradient")}


def uses(doc: HtmlElement, known: frozenset[str]) -> Iterator[Use]:
    """Every feature use in the document whose slug the dataset knows."""
    if doc.getroottree().docinfo.doctype:
        yield Use("html-doctype", "<!doctype>", None)
    for element in doc.iter():
        if not isinstance(element.tag, str):
            continue
        for use in (*_html_uses(element), *_style_uses(element, known)):
            if use.slug in known:
                yield use


def _html_uses(element: HtmlElement) -> Iterator[Use]:
    tag = str(element.tag)
    yield Use(_TAGS.get(tag, f"html-{tag}"), f"<{tag}>", element)
    for name in element.attrib:
        if name == "style":
            continue
        yield Use(_ATTRIBUTES.get(name, f"html-{name}"), f"{name}=", element)
    if tag == "img":
        yield from _image_uses(element)
    if tag == "a":
        href = (element.get("href") or "").strip()
        if href.startswith("#"):
            yield Use("html-anchor-links", "<a href=#…>", element)
        elif href.startswith("mailto:"):
            yield Use("html-mailto-links", "<a href=mailto:…>", element)
    if tag == "input":
        yield Use(f"html-input-{element.get('type', 'text')}", "<input>", element)
    if tag == "button":
        yield Use(f"html-button-{element.get('type', 'submit')}", "<button>", element)
    if tag == "meta" and element.get("name") == "color-scheme":
        yield Use("html-meta-color-scheme", '<meta name="color-scheme">', element)


def _image_uses(element: HtmlElement) -> Iterator[Use]:
    src = (element.get("src") or "").strip()
    if src.startswith("data:"):
        yield Use("image-base64", "data: image", element)
        return
    extension = urlsplit(src).path.rsplit(".", 1)[-1].lower()
    if extension in _IMAGE_TYPES:
        yield Use(f"image-{_IMAGE_TYPES[extension]}", f".{extension} image", element)


def _style_uses(element: HtmlElement, known: frozenset[str]) -> Iterator[Use]:
    style = element.get("style")
    if style:
        for slug, detail in _inline_uses(style, known):
            yield Use(slug, detail, element)
    if element.tag == "style" and element.get("type", "text/css") == "text/css":
        rules = tinycss2.parse_stylesheet(element.text or "", skip_comments=True)
        yield from _rule_uses(rules, element, known)


@lru_cache(maxsize=4096)
def _inline_uses(style: str, known: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """(slug, detail) per use in one style attribute: MJML repeats the same few hundred
    style strings, so each is parsed once."""
    declarations = tinycss2.parse_blocks_contents(style)
    return tuple((u.slug, u.detail) for u in _declaration_uses(declarations, None, known))


def _rule_uses(rules: Iterable[Node], style: HtmlElement, known: Container[str]) -> Iterator[Use]:
    for rule in rules:
        if isinstance(rule, AtRule):
            yield from _at_rule_uses(rule, style, known)
        elif isinstance(rule, QualifiedRule):
            declarations = tinycss2.parse_blocks_contents(rule.content)
            yield from _declaration_uses(declarations, style, known)


def _at_rule_uses(rule: AtRule, style: HtmlElement, known: Container[str]) -> Iterator[Use]:
    keyword = rule.lower_at_keyword
    yield Use(f"css-at-{keyword}", f"@{keyword}", style)
    if keyword == "media":
        prelude = tinycss2.serialize(rule.prelude).lower()
        for feature in ("prefers-color-scheme", "prefers-reduced-motion", "hover", "orientation"):
            if feature in prelude:
                yield Use(f"css-at-media-{feature}", f"@media ({feature})", style)
        if "device-pixel-ratio" in prelude:
            yield Use("css-at-media-device-pixel-ratio", "@media (device-pixel-ratio)", style)
    if rule.content is not None and keyword in ("media", "supports"):
        rules = tinycss2.parse_rule_list(rule.content, skip_comments=True)
        yield from _rule_uses(rules, style, known)
    elif rule.content is not None and keyword == "font-face":
        yield from _declaration_uses(tinycss2.parse_blocks_contents(rule.content), style, known)


def _declaration_uses(
    nodes: Iterable[Node], element: HtmlElement | None, known: Container[str]
) -> Iterator[Use]:
    for node in nodes:
        if not isinstance(node, Declaration) or node.lower_name.startswith("mso-"):
            continue
        name = node.lower_name
        value = tinycss2.serialize(node.value).strip()
        yield Use(_property_slug(name, known), name, element)
        if node.important:
            yield Use("css-important", "!important", element)
        if name == "display" and value.lower() in _DISPLAY:
            yield Use(_DISPLAY[value.lower()], f"display:{value.lower()}", element)
        yield from _value_uses(node.value, name, element)


def _property_slug(name: str, known: Container[str]) -> str:
    if f"css-{name}" in known:
        return f"css-{name}"
    for prefix, slug in _LONGHANDS:
        if name.startswith(prefix):
            return slug
    if name in ("left", "right", "top", "bottom"):
        return "css-left-right-top-bottom"
    return f"css-{name}"


def _value_uses(values: Iterable[Node], name: str, element: HtmlElement | None) -> Iterator[Use]:
    for token in values:
        if isinstance(token, FunctionBlock):
            function = token.lower_name
            if function in _FUNCTIONS:
                yield Use(_FUNCTIONS[function], f"{name}: {function}()", element)
            yield from _value_uses(token.arguments, name, element)
        elif isinstance(token, DimensionToken):
            yield Use(f"css-unit-{token.lower_unit}", f"{name}: …{token.lower_unit}", element)
        elif isinstance(token, PercentageToken):
            yield Use("css-unit-percent", f"{name}: …%", element)
        elif isinstance(token, IdentToken) and token.lower_value == "initial":
            yield Use("css-unit-initial", f"{name}: initial", element)
