"""Screenshots of a rendered email in headless Chromium: phone and desktop, light and dark."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from newsletter import placeholders
from newsletter.config import Settings
from newsletter.errors import PreviewError
from newsletter.models import Issue, RenderedEmail
from newsletter.readers import sample_reader

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

Scheme = Literal["light", "dark"]
WIDTHS = {"phone": 375, "desktop": 640}
SCHEMES: tuple[Scheme, ...] = ("light", "dark")
DEFAULT_IMAGE_SIZE = (600, 338)
# Headless on a machine without a display, GPU or internet; no sandbox because CI runs as root.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

ImageSizes = Mapping[str, tuple[int, int]]


def chromium_path(settings: Settings) -> str:
    """The Chromium binary: the setting, else Debian's `chromium` on PATH."""
    path = settings.chromium_path or shutil.which("chromium") or ""
    if not path or not Path(path).is_file():
        raise PreviewError(
            "Chromium is not installed: run `apt-get install chromium` (Debian's package) "
            "or set `chromium_path` to a Chromium binary."
        )
    return path


@contextmanager
def browser(settings: Settings) -> Iterator[Browser]:
    """One headless Chromium for as many pages as the caller opens."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        raise PreviewError(
            "Screenshots need Playwright: pip install 'newsletter[browser]'."
        ) from exc
    executable = chromium_path(settings)
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=executable, args=list(CHROMIUM_ARGS)
            )
        except Error as exc:
            raise PreviewError(f"Chromium ({executable}) did not start: {exc.message}") from exc
        try:
            yield chromium
        finally:
            chromium.close()


def image_sizes(issue: Issue) -> dict[str, tuple[int, int]]:
    """The declared size of every article image, for the placeholders served in their place."""
    return {
        a.image.url: (
            a.image.width or DEFAULT_IMAGE_SIZE[0],
            a.image.height or DEFAULT_IMAGE_SIZE[1],
        )
        for a in issue.articles
        if a.image
    }


def open_email(
    chromium: Browser,
    html: str,
    *,
    width: int,
    scheme: Scheme = "light",
    images: ImageSizes | None = None,
) -> Page:
    """The email in a fresh page `width` px wide; the caller closes `page.context`."""
    context = chromium.new_context(
        viewport={"width": width, "height": 800}, color_scheme=scheme, device_scale_factor=1
    )
    page = context.new_page()
    page.route("**/*", _offline_router(images or {}))
    page.set_content(html, wait_until="load")
    return page


def _offline_router(images: ImageSizes) -> Callable[[Route], None]:
    """The machine has no internet: images get a local placeholder of their declared size,
    and every other request that leaves 127.0.0.1 is refused instead of hanging."""

    def route(route: Route) -> None:
        request = route.request
        url = request.url
        if request.resource_type == "image" and url.startswith("https://"):
            size = images.get(url) or images.get(url.split("?")[0]) or DEFAULT_IMAGE_SIZE
            route.fulfill(status=200, content_type="image/png", body=placeholder_png(*size))
        elif urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "about:")):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    return route


MAX_SIDE = 2400  # a declared 100000 x 100000 image must not make us build 30 GB of pixels


@lru_cache(maxsize=16)
def placeholder_png(width: int, height: int) -> bytes:
    """A PNG of the given shape, at most MAX_SIDE a side: a blue-grey gradient."""
    scale = min(1.0, MAX_SIDE / max(width, height, 1))
    width, height = max(1, int(width * scale)), max(1, int(height * scale))
    rows = []
    for y in range(height):
        shade = 150 + (y * 60) // max(height - 1, 1)
        rows.append(b"\x00" + bytes((shade - 40, shade - 10, shade + 20)) * width)
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def preview_html(email: RenderedEmail, settings: Settings) -> str:
    """The HTML part as the sample reader receives it (placeholders filled)."""
    return placeholders.fill(email.html, sample_reader(settings), part="html", tags=email.tags)


def take(chromium: Browser, html: str, out_dir: Path, images: ImageSizes) -> list[Path]:
    """Full-page PNGs: `phone-light.png`, `phone-dark.png`, `desktop-light.png`, ..."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for label, width in WIDTHS.items():
        for scheme in SCHEMES:
            page = open_email(chromium, html, width=width, scheme=scheme, images=images)
            path = out_dir / f"{label}-{scheme}.png"
            page.screenshot(path=str(path), full_page=True)
            page.context.close()
            written.append(path)
    return written


def snapshot(issue: Issue, email: RenderedEmail, out_dir: Path, settings: Settings) -> list[Path]:
    """Launch Chromium, write the four screenshots of one issue, and close it."""
    with browser(settings) as chromium:
        return take(chromium, preview_html(email, settings), out_dir, image_sizes(issue))
