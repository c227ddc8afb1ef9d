"""Every public URL the package hands out, built in one place from `base_url`."""

from __future__ import annotations

from newsletter.config import Settings

# Links that look like an unsubscribe link but never carry a token: a preview, a test copy
# or the public web copy must not be able to unsubscribe anybody.
PREVIEW_ONLY_PATH = "/u/preview-only-not-a-real-token"
TEST_COPY_PATH = "/u/test-copy-not-a-real-token"
PUBLIC_UNSUBSCRIBE_PATH = "/unsubscribe"


def site_url(settings: Settings, path: str) -> str:
    """`path` (starting with '/') on the public site, whatever trailing '/' base_url has."""
    return f"{settings.base_url.rstrip('/')}{path}"


def unsubscribe_link(settings: Settings, token: str) -> str:
    return site_url(settings, f"/u/{token}")


def confirm_link(settings: Settings, token: str) -> str:
    return site_url(settings, f"/confirm/{token}")


def web_copy_link(settings: Settings, issue_name: str) -> str:
    """The archive page of an issue, as the email's "view in browser" link names it."""
    return site_url(settings, f"/issues/{issue_name}/")


def preview_only_link(settings: Settings) -> str:
    return site_url(settings, PREVIEW_ONLY_PATH)


def test_copy_link(settings: Settings) -> str:
    return site_url(settings, TEST_COPY_PATH)


def public_unsubscribe_link(settings: Settings) -> str:
    """The web copy's unsubscribe link: a page that says to use the email's own link."""
    return site_url(settings, PUBLIC_UNSUBSCRIBE_PATH)
