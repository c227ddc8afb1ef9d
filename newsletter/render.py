"""Render a resolved Issue: Jinja2 -> MJML -> mjml-python -> premailer, and the text part."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
from jinja2.filters import do_wordwrap

from newsletter import inert, inline, placeholders, rates, urls
from newsletter.config import Settings
from newsletter.errors import RenderError
from newsletter.markdown import to_html
from newsletter.models import Article, Image, Issue, RateSnapshot, RenderedEmail
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
CURRENCY_NAMES = {
    "USD": "US dollar",
    "EUR": "euro",
    "RUB": "Russian rouble",
    "CNY": "Chinese yuan",
    "KGS": "Kyrgyz som",
    "KZT": "Kazakh tenge",
    "TJS": "Tajik somoni",
    "UZS": "Uzbek soʻm",
    "TMT": "Turkmen manat",
}


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
        },
        "intro": to_html(spec.intro),
        "intro_text": wrap_markdown(spec.intro),
        "sections": [
            {
                "heading": inert.text(s.heading),
                "style": s.style,
                "articles": [_article(a, spec.utm, full=s.style == "full") for a in s.articles],
            }
            for s in issue.sections
        ],
        "rates": _rates(issue.rates, issue.rate_history),
        "links": {"archive": inert.url(urls.web_copy_link(settings, spec.name))},
        "footer": {"postal_address": inert.text(settings.postal_address)},
    }


def long_date(date: Any) -> str:
    """'10 December 2025', the same in every locale."""
    return f"{date.day} {MONTHS[date.month - 1]} {date.year}"


def _article(article: Article, utm: tuple[tuple[str, str], ...], *, full: bool) -> dict[str, Any]:
    return {
        "slug": article.slug,
        "title": inert.text(article.title),
        "date": long_date(article.date),
        "link": inert.url(with_params(article.url, utm)),
        "summary": inert.text(article.summary),
        "image": _image(article.image),
        "author": inert.text(article.author) if article.author else None,
        "credit": inert.text(article.credit) if article.credit else None,
        # Bodies are rendered only where a section shows them in full.
        "body_html": to_html(article.body) if full else None,
        "body_text": wrap_markdown(article.body) if full else None,
    }


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


def _rates(snapshot: RateSnapshot | None, trend: tuple[RateSnapshot, ...]) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    rows = []
    for rate in snapshot.rates:
        series = [s.get(rate.currency) for s in trend]
        values = [r.value for r in series if r is not None]
        change = rates.zero_safe(rate.change_pct)
        rows.append(
            {
                "currency": rate.currency,
                "name": CURRENCY_NAMES.get(rate.currency, rate.currency),
                "value": rates.plain(rate.value),
                "inverse": rates.significant(rates.inverse(rate)),
                "change": rates.format_change(change),
                "direction": "up" if change > 0 else "down" if change < 0 else "flat",
                "trend": rates.sparkline(values),
            }
        )
    return {
        "base": snapshot.base,
        "base_name": CURRENCY_NAMES.get(snapshot.base, snapshot.base),
        "date": long_date(snapshot.date),
        "source": inert.text(snapshot.source),
        "days": len(trend),
        "rows": rows,
    }
