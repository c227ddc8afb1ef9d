"""Render a resolved Issue: Jinja2 -> MJML -> mjml-python -> premailer, and the text part."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
from jinja2.filters import do_wordwrap
from markupsafe import Markup

from newsletter import brand, inert, inline, placeholders, ratepanel, urls
from newsletter.config import Settings
from newsletter.errors import RenderError
from newsletter.markdown import to_html
from newsletter.models import Article, Image, Issue, RenderedEmail, Section
from newsletter.text import has_url, wrap_markdown

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# Languages written right to left, by primary subtag (BCP 47; Babel/CLDR is not a
# dependency, and this list changes about never): Arabic, Hebrew (and its old code iw),
# Persian, Urdu, Pashto, Sindhi, Yiddish, Dhivehi, Uyghur, Sorani Kurdish, Syriac.
RTL_LANGUAGES = frozenset(
    {"ar", "he", "iw", "fa", "ur", "ps", "sd", "yi", "dv", "ug", "ckb", "syr"}
)


def direction(language: str) -> str:
    """'rtl' or 'ltr' for a language tag ('ar', 'fa-IR', 'ur-Arab'; 'en' by default)."""
    primary = language.split("-", 1)[0].casefold()
    return "rtl" if primary in RTL_LANGUAGES else "ltr"


def render(issue: Issue, settings: Settings) -> RenderedEmail:
    """One render per issue; per-recipient fields stay placeholders for the mailer.

    Content reaches the templates inert (see `inert`); the tags carry a key derived from
    that content (see `placeholders.build_key`), so no content can spell one.
    """
    env = environment(settings.path("templates_dir"))
    context = build_context(issue, settings)
    tags = placeholders.Tags(placeholders.build_key([issue.spec.template, context]))
    mjml = _render_template(env, f"{issue.spec.template}.mjml.j2", context, tags.html)
    # MRML writes a non-printable character in an attribute (an image's alt, the title it
    # copies into aria-label) as the text `\u{2060}`; a character reference reaches the
    # HTML as the character itself.
    mjml = mjml.replace(inert.JOINER, "&#8288;")
    mjml = _escape_backslashes(mjml)
    text = _render_template(env, f"{issue.spec.template}.txt.j2", context, tags.text)
    html = inline.inline_css(compile_mjml(mjml))
    text = _tidy_text(text)
    subject, preheader = context["issue"]["subject"], context["issue"]["preheader"]
    digest = hashlib.sha256("\0".join((subject, preheader, html, text)).encode()).hexdigest()
    return RenderedEmail(
        issue_name=issue.name,
        subject=subject,
        preheader=preheader,
        from_name=settings.from_name,
        from_email=settings.from_email,
        html=html,
        text=text,
        mjml=mjml,
        content_hash=digest,
        warnings=issue.warnings + inert.findings(issue),
        issue_date=issue.spec.date,
        tags=tags,
    )


_ENVIRONMENTS: dict[Path, jinja2.Environment] = {}


def environment(templates: Path) -> jinja2.Environment:
    """One Environment per template folder, kept so compiled templates are reused."""
    if templates not in _ENVIRONMENTS:
        # bandit B701: autoescape is on for all but the plain-text part (the callable below).
        _ENVIRONMENTS[templates] = jinja2.Environment(  # nosec B701
            loader=jinja2.FileSystemLoader(templates),
            # select_autoescape() does not know .mjml: escape everything but the text part.
            autoescape=lambda name: not (name or "").endswith(".txt.j2"),  # noqa: S701
            undefined=jinja2.StrictUndefined,  # a typo in a template fails the build
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=True,
            # Compiled templates survive the process (in a private per-user temp folder):
            # compiling them costs more than rendering on every `newsletter build`.
            bytecode_cache=jinja2.FileSystemBytecodeCache(),
        )
        _ENVIRONMENTS[templates].filters["wordwrap"] = _wordwrap
    return _ENVIRONMENTS[templates]


@jinja2.pass_environment
def _wordwrap(
    env: jinja2.Environment,
    text: str,
    width: int = 79,
    break_long_words: bool = False,
    wrapstring: str | None = None,
    break_on_hyphens: bool = False,
) -> str:
    """Jinja's wordwrap, but words come out whole by default: a word cut at a hyphen could
    start a line with a tag-shaped fragment of content (which preflight would then blame on
    the template). A URL is never cut, whatever the template asks: a plain-text client links
    only the first half. One longer than `width` gets a line of its own."""
    if has_url(text):
        break_long_words = break_on_hyphens = False
    return do_wordwrap(env, text, width, break_long_words, wrapstring, break_on_hyphens)


def _render_template(
    env: jinja2.Environment, name: str, context: dict[str, Any], tag: Callable[[str], str]
) -> str:
    ph = {field: tag(field) for field in placeholders.FIELDS}  # this build's tags
    try:
        return env.get_template(name).render(context, ph=ph)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name}:{exc.lineno}"
        raise RenderError(f"{where}: template syntax error: {exc.message}.") from exc
    except jinja2.TemplateError as exc:
        raise RenderError(f"{_template_location(exc, name)}: {exc}.") from exc


def _template_location(exc: BaseException, default: str) -> str:
    """The innermost template frame of a render-time error, as 'file:line'."""
    tb = exc.__traceback__
    where = default
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


_STYLE_BLOCK = re.compile(r"(<mj-style\b.*?</mj-style>)", re.DOTALL)


def _escape_backslashes(mjml: str) -> str:
    """MRML doubles a backslash in every attribute it writes (a title `a\\b` became the link
    name `a\\\\b`); a character reference reaches the HTML as the one character. Style
    sheets are left alone: CSS escapes are backslashes and CSS reads no references."""
    parts = _STYLE_BLOCK.split(mjml)
    return "".join(part if i % 2 else part.replace("\\", "&#92;") for i, part in enumerate(parts))


def compile_mjml(mjml: str) -> str:
    from mjml import mjml2html  # the MRML binding (PyPI: mjml-python)

    try:
        # fonts={}: no web-font <link>s, which would point the inliner and clients at the network.
        return str(mjml2html(mjml, disable_comments=True, fonts={}))
    except Exception as exc:  # the binding raises a bare Exception subclass per MRML error
        raise RenderError(f"MJML did not compile: {exc}. Check the .mjml.j2 template.") from exc


def _tidy_text(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


# ---- the template context -----------------------------------------------------------------


def build_context(issue: Issue, settings: Settings) -> dict[str, Any]:
    """What the templates see. Every string from content is inert here: text through
    `inert.text`, URLs through `inert.url`, Markdown through `to_html`/`wrap_markdown`."""
    spec = issue.spec
    return {
        "issue": {
            "name": inert.text(spec.name),
            "title": inert.text(spec.title),
            "subject": inert.text(spec.subject),
            "preheader": inert.text(spec.preheader),
            "date": long_date(spec.date),
            "language": spec.language,
            "dir": direction(spec.language),
        },
        "intro": to_html(spec.intro),
        "intro_text": wrap_markdown(spec.intro),
        "sections": [_section(s, issue) for s in issue.sections],
        "rates": ratepanel.panel(
            issue.rates, issue.rate_history, settings.rate_trend_days, long_date
        ),
        "links": {"archive": inert.url(urls.web_copy_link(settings, spec.name))},
        "footer": {
            "postal_address": inert.text(settings.postal_address),
            "why": inert.text(settings.footer_why),
        },
        "brand": _brand(settings, spec.title),
    }


def _brand(settings: Settings, title: str) -> dict[str, Any]:
    return {
        "logo_url": inert.url(settings.brand_logo_url),
        "logo_alt": inert.text(settings.brand_logo_alt or title),
        "logo_width": settings.brand_logo_width,
        "accent": settings.brand_accent,
        # Checked against the white card when settings load; derived for the dark one.
        "accent_dark": brand.dark_variant(settings.brand_accent),
    }


def _section(section: Section, issue: Issue) -> dict[str, Any]:
    return {
        "heading": inert.text(section.heading),
        "style": section.style,
        "cta": section.cta,
        "articles": [_article(a, issue, section) for a in section.articles],
    }


def long_date(date: Any) -> str:
    """'10 December 2025', the same in every locale."""
    return f"{date.day} {MONTHS[date.month - 1]} {date.year}"


def _article(article: Article, issue: Issue, section: Section) -> dict[str, Any]:
    spec = issue.spec
    # Only a lead excerpt or a full story shows the body; the others never render it.
    body = article.body if section.style == "full" else ""
    truncated = False
    if section.style == "lead":
        body, truncated = excerpt(article.body, section.words)
    lang = article.lang if article.lang and article.lang != spec.language else None
    return {
        "slug": article.slug,
        "title": inert.text(article.title),
        # The issue's own date goes without saying; an older story says when it ran.
        "date": long_date(article.date) if article.date != spec.date else None,
        "link": inert.url(with_params(article.url, spec.utm)),
        "summary": inert.text(article.summary),
        "sentence": inert.text(first_sentence(article.summary)),
        "image": _image(article.image),
        "author": inert.text(article.author) if article.author else None,
        "credit": inert.text(article.credit) if article.credit else None,
        "lang": lang,
        "dir": direction(lang) if lang and direction(lang) != direction(spec.language) else None,
        "body_html": _nested_headings(to_html(body)) if body else None,
        "body_text": wrap_markdown(body) if body else None,
        "truncated": truncated,
    }


_BLOCKS = re.compile(r"\n\s*\n")
# A reference-style link definition, `[label]: https://...`: it renders nothing itself, but
# without it `[the report][r]` prints as literal brackets.
_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*\S.*$", re.MULTILINE)


def excerpt(markdown: str, words: int) -> tuple[str, bool]:
    """Whole paragraphs from the start while they fit in `words` words (the first paragraph
    always does, even after a heading), and whether anything was left out. A heading is
    never the last thing kept, and every link definition comes along, so a kept
    `[text][label]` still links."""
    definitions = _DEFINITION.findall(markdown)
    blocks = [b for b in _BLOCKS.split(markdown.strip()) if b.strip()]
    blocks = [b for b in blocks if _DEFINITION.sub("", b).strip()]
    kept: list[str] = []
    count = 0
    for block in blocks:
        size = 0 if _is_heading(block) else len(block.split())
        if count and count + size > words:
            break
        kept.append(block)
        count += size
    while len(kept) > 1 and _is_heading(kept[-1]):
        kept.pop()
    text = "\n\n".join(kept + (["\n".join(definitions)] if definitions else []))
    return text + "\n", len(kept) < len(blocks)


def _is_heading(block: str) -> bool:
    return block.lstrip().startswith("#")


# Words that end in a full stop without ending a sentence ("Dr. Aliyev", "St. Petersburg").
# Initials ("J. Smith") and dotted abbreviations ("U.N.", "e.g.") are recognised by shape.
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "mt",
        "ft",
        "jr",
        "sr",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "cmdr",
        "adm",
        "gov",
        "sen",
        "rep",
        "rev",
        "hon",
        "pres",
        "no",
        "nos",
        "vs",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "corp",
        "bros",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "fig",
        "vol",
        "pp",
    ]
)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)\]]*(?= )")
_OPENERS = "\"'“‘«(["


def first_sentence(text: str) -> str:
    """The first sentence of `text` (all of it when it has no sentence end).

    A sentence ends at . ! ? or … (with any closing quotes) when the next word starts with
    a capital letter or a digit, and, for a full stop, the word before it is not an
    abbreviation or an initial: "Dr. Aliyev said." is one sentence, so is "The U.N. said."
    """
    text = " ".join(text.split())
    for end in _SENTENCE_END.finditer(text):
        following = text[end.end() :].lstrip().lstrip(_OPENERS)
        if not following or not (following[0].isupper() or following[0].isdigit()):
            continue
        if text[end.start()] == "." and _abbreviation(text[: end.start()]):
            continue
        return text[: end.end()]
    return text


def _abbreviation(before: str) -> bool:
    """Whether the word ending `before` (the full stop cut off) is an abbreviation."""
    word = before.rsplit(" ", 1)[-1].lstrip(_OPENERS)
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial
    return "." in word or word.casefold() in ABBREVIATIONS


_BODY_HEADING = re.compile(r"<(/?)h([2-4])\b")


def _nested_headings(html: Markup) -> Markup:
    """An article's own headings (## ...) under its h3 title: h2-h4 become h4-h6, so a
    screen reader's outline goes issue > section > story > the story's parts.

    Sanitized HTML escapes every `<` of text, so this only meets real heading tags."""
    # bandit B704: re-tags markup that nh3 already sanitized; no text becomes markup.
    return Markup(  # noqa: S704  # nosec B704
        _BODY_HEADING.sub(lambda m: f"<{m.group(1)}h{int(m.group(2)) + 2}", str(html))
    )


def _image(image: Image | None) -> Image | None:
    if image is None:
        return None
    return replace(image, url=inert.url(image.url), alt=inert.text(image.alt))


def with_params(url: str, params: tuple[tuple[str, str], ...]) -> str:
    """`url` with UTM parameters appended (existing parameters and fragment kept)."""
    if not params:
        return url
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))
