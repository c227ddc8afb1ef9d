"""Articles: Markdown files with YAML front matter under content/articles/."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from newsletter import yamlfile
from newsletter.errors import ArticleFileError, Problem, UnreadableFileError, YamlSyntaxError
from newsletter.models import Article, Image

ARTICLE_KEYS = {
    "slug",
    "title",
    "date",
    "url",
    "summary",
    "image",
    "tags",
    "author",
    "credit",
    "draft",
    "lang",
    "feed",  # where `articles import-feed` took it from (newsletter/feeds); never rendered
}
FEED_KEYS = {"guid", "source", "digest"}
IMAGE_KEYS = {"url", "alt", "width", "height"}
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # fullmatch: `$` would pass "a\n"
# A BCP 47 language tag as HTML's `lang` takes it: "en", "ru", "uz-Cyrl", "pt-BR".
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
SAFE_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
# Placeholder for a missing date: the file is reported as broken, so it is never used.
_EPOCH = dt.date(1970, 1, 1)
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*\r?\n?(.*)\Z", re.DOTALL)


def load_articles(directory: Path) -> dict[str, Article]:
    """Every article by slug; any malformed file fails the load with all its problems."""
    articles: dict[str, Article] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.md")):
        try:
            article = yamlfile.memoized(path, "article", parse_article)
        except ArticleFileError as exc:
            problems.extend(exc.problems)
            continue
        if article.slug in articles:
            other = articles[article.slug].path
            problems.append(
                Problem(f"slug '{article.slug}' is also used by {other}.", path, "slug")
            )
        articles[article.slug] = article
    if problems:
        raise ArticleFileError(problems)
    return articles


def parse_article(path: Path) -> Article:
    try:
        text = yamlfile.read_text(path)
    except UnreadableFileError as exc:  # a problem of this file, listed with the others
        raise ArticleFileError([Problem(f"{exc.reason}.", path)]) from exc
    match = FRONT_MATTER.match(text)
    if not match:
        raise ArticleFileError(
            [Problem("no YAML front matter: start the file with a '---' line.", path, line=1)]
        )
    front, body = match.groups()
    try:
        check = yamlfile.Checker(yamlfile.parse(front, path, line_offset=1))
    except YamlSyntaxError as exc:
        raise ArticleFileError([exc.problem]) from exc
    check.mapping((), ARTICLE_KEYS)
    check.mapping(("feed",), FEED_KEYS)
    slug = check.text(("slug",), required=False) or path.stem
    if not SLUG.fullmatch(slug):
        check.problem(("slug",), f"'{slug}' is not a slug: use lowercase letters, digits, '-'.")
    url = _url(check, ("url",))
    article = Article(
        slug=slug,
        title=check.text(("title",)),
        date=check.date(("date",)) or _EPOCH,
        url=url,
        summary=check.text(("summary",)).strip(),
        body=body.strip() + "\n",
        tags=check.strings(("tags",)),
        image=_image(check),
        author=check.text(("author",), required=False) or None,
        credit=check.text(("credit",), required=False) or None,
        path=path,
        draft=_draft(check),
        lang=language(check, ("lang",)) or None,
        file_lines=tuple(text.splitlines()),
    )
    _check_shown_text(check)
    _check_body(check, text, match.start(2))
    if check.problems:
        raise ArticleFileError(check.problems)
    return article


# Fields a reader sees in the email. Checker.text already refuses C0/C1 controls; a bidi
# embedding, override or isolate (U+202A-U+202E, U+2066-U+2069) or a line/paragraph
# separator is printable to YAML but invisible in the editor, and reorders what the reader
# sees after it ("Photo: \u202e@iom.int" draws backwards): refused, as footer_why is.
SHOWN_FIELDS = (("title",), ("summary",), ("author",), ("credit",), ("image", "alt"))
BIDI_CONTROL = re.compile(r"[\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _check_shown_text(check: yamlfile.Checker) -> None:
    for field in SHOWN_FIELDS:
        value = check.get(field)
        found = BIDI_CONTROL.search(value) if isinstance(value, str) else None
        if found:
            check.problem(
                field,
                f"contains the invisible character U+{ord(found.group()):04X} (a bidi "
                "override or separator that reorders or breaks the text after it); delete it "
                "(retype the text around it if your editor does not show it).",
            )


def _check_body(check: yamlfile.Checker, text: str, start: int) -> None:
    """A control character in the body: no reader sees it, and MJML refuses the document."""
    found = yamlfile.INVISIBLE_CONTROL.search(text, start)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        check.problems.append(
            Problem(
                f"contains the control character U+{ord(found.group()):04X}; remove it.",
                check.doc.path,
                "body",
                line,
            )
        )


def _url(check: yamlfile.Checker, field: tuple[str, ...], *, required: bool = True) -> str:
    url = check.text(field, required=required).strip()
    if url and not SAFE_URL.fullmatch(url):
        check.problem(field, f"'{url}' is not an absolute http(s) URL.")
    return url


def _image(check: yamlfile.Checker) -> Image | None:
    if check.get(("image",)) is None:
        return None
    check.mapping(("image",), IMAGE_KEYS)
    url = _url(check, ("image", "url"))
    if url.lower().startswith("http://"):
        check.problem(("image", "url"), "images must be https, or mail clients block them.")
    return Image(
        url=url,
        alt=check.text(("image", "alt")),
        width=check.integer(("image", "width"), minimum=1, maximum=10_000),
        height=check.integer(("image", "height"), minimum=1, maximum=10_000),
    )


def language(check: yamlfile.Checker, field: tuple[str, ...], default: str = "") -> str:
    """A language tag, checked: it becomes an HTML `lang` attribute."""
    value = check.text(field, required=False).strip()
    if value and not LANGUAGE_TAG.fullmatch(value):
        check.problem(
            field,
            f"'{value}' is not a language tag; write one such as en, ru, uz-Cyrl or pt-BR.",
        )
        return default
    return value or default


def _draft(check: yamlfile.Checker) -> bool:
    value = check.get(("draft",))
    if value is None:
        return False
    if not isinstance(value, bool):
        check.problem(("draft",), f"expected true or false, got {value!r}.")
        return True  # the file fails to load anyway; never treat it as published
    return value
