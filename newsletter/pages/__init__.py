"""The web pages: Jinja templates in this folder, rendered by one autoescaping environment.

Every HTML page the package serves (the public unsubscribe/subscribe pages, the web copy's
help page, the live preview) is a template here. Values reach a page only as template
context, so autoescape escapes each one where it lands; no page is assembled in Python.
`StrictUndefined` makes a misspelt name an error instead of an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

# Public pages: nothing may frame the unsubscribe button, nothing is cached or indexed,
# the token in the URL is never sent on as a referrer, and no script runs.
PUBLIC_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",  # nobody may frame the unsubscribe button
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("newsletter", "pages"),
    # Every template here is HTML (CSS and JS are included into HTML pages), so escape
    # everywhere: select_autoescape would judge by extension and miss the included files.
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
)


def render(template: str, **context: Any) -> str:
    """The page `template` with `context`, every value escaped where it lands."""
    return ENVIRONMENT.get_template(template).render(context)


def response(
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The rendered page as an HTML response."""
    return HTMLResponse(render(template, **context), status_code=status, headers=headers)
