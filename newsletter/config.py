"""Settings: defaults < newsletter.toml < environment < CLI flags. Nothing else reads os.environ."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import string
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from newsletter import inputfile
from newsletter.errors import ConfigError, UnreadableFileError
from newsletter.headers import CONTROL

CONFIG_FILE = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
# Names that do not follow NEWSLETTER_<SETTING>: the provider's conventional variable, and
# the secret-key list, whose variable is singular because most installs have one key.
# bandit B105: names of environment variables, not passwords.
ENV_ALIASES = {  # nosec B105
    "SENDGRID_API_KEY": "sendgrid_api_key",
    "NEWSLETTER_SECRET_KEY": "secret_keys",
}


class Secret:
    """A string that never shows itself in a repr, a log line or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    root: Path = Path()
    content_dir: Path = Path("content")
    issues_dir: Path = Path("issues")
    templates_dir: Path = Path("templates")
    build_dir: Path = Path("build")
    outbox_dir: Path = Path("outbox")
    # empty: sqlite file `newsletter.db` under root. Not in the repr: a URL may hold a password.
    database_url: str = field(default="", repr=False)
    database_busy_timeout: float = 30.0  # seconds a SQLite writer waits for another writer
    base_url: str = "https://news.example.org"
    from_name: str = "Central Asia Weekly"
    from_email: str = "digest@news.example.org"
    postal_address: str = "Central Asia Weekly, 12 Erkindik Boulevard, Bishkek 720040, Kyrgyzstan"
    stale_after_days: int = 2
    mailer: str = "auto"  # auto: sendgrid when SENDGRID_API_KEY is set, else outbox | smtp
    sendgrid_api_key: Secret | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_timeout: float = 10.0
    sendgrid_sandbox: bool = False
    send_batch_size: int = 1000  # recipients per provider request; SendGrid's ceiling is 1000
    # Several `newsletter send` workers may share one database. A worker beats every quarter
    # of the lease; one silent for longer than this (seconds), on any host, or whose
    # process is gone from this host after two missed beats, is taken for dead and its
    # claims become `unknown` (ledger.is_dead).
    send_lease: float = 60.0
    # Messages per second that all workers together may send (0: no ceiling), shared
    # through the database so the account's limit holds however many workers run.
    send_rate_limit: float = 0.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_security: str = "none"  # none | starttls | tls
    smtp_username: str = ""
    smtp_password: Secret | None = None
    smtp_timeout: float = 10.0
    smtp_ca_file: str = ""  # CA bundle to trust instead of the system's (an internal relay)
    secret_keys: tuple[Secret, ...] = ()
    # SendGrid's Signed Event Webhook verification key (base64 DER, as its settings page shows
    # it). Public, so newsletter.toml may hold it. Empty: the event webhook is off.
    sendgrid_webhook_public_key: str = ""
    # How far (seconds) a webhook POST's signed timestamp may be from our clock. Bounds how
    # long a captured POST can be replayed (say, to re-add a bounce after a resubscribe),
    # while leaving room for clock skew and SendGrid's queueing.
    sendgrid_webhook_tolerance: float = 600.0
    serve_host: str = "127.0.0.1"
    serve_port: int = 8025
    # The subscribe form's budgets, per rolling hour: form posts from one client (an IPv4
    # address, or an IPv6 /64, which one household or VM usually holds whole), and from
    # everyone together. Past either, the form answers 429 with Retry-After.
    subscribe_per_client_hour: int = 5
    subscribe_per_hour: int = 500
    # Proxies (addresses or networks) whose `client_ip_header` is believed: the client is
    # the right-most address in it that is not one of them. Empty: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    client_ip_header: str = "X-Forwarded-For"
    form_max_bytes: int = 16384  # a public form's whole body; a subscribe form needs ~1 KB
    confirm_token_days: float = 7.0  # a double opt-in link older than this is invalid
    # The editor's desk: preview server, preflight and browser screenshots.
    preview_host: str = "127.0.0.1"
    preview_port: int = 8030
    chromium_path: str = ""  # empty: `chromium` on PATH (Debian's package)
    history_issues: int = 4  # an article in one of the last N issues is flagged as already sent
    rate_currencies: tuple[str, ...] = ("KGS", "KZT", "TJS", "UZS", "TMT")
    min_rate_digits: int = 3  # fewer significant digits than this makes a rate look flat
    rate_trend_days: int = 7  # the rate panel's trend window; fewer snapshots in it warn
    # Brand: the masthead's logo (empty: the issue's title set as a wordmark) and its alt
    # text (empty: the title), the accent of section headings, rules and links, and the
    # footer's "why you get this" (empty: "You receive this because you subscribed to ...").
    brand_logo_url: str = ""
    brand_logo_alt: str = ""
    brand_logo_width: int = 200  # px on desktop; a phone narrower than it scales it down
    brand_accent: str = "#0b4f8a"
    footer_why: str = ""
    # The client families the client-support gate reports on (newsletter.clients.FAMILIES).
    client_families: tuple[str, ...] = (
        "gmail-web",
        "gmail-app",
        "outlook-windows",
        "outlook-macos",
        "outlook-web",
        "apple-mail-macos",
        "apple-mail-ios",
        "yahoo",
        "mail-ru",
        "samsung-email",
    )
    # `articles import-feed` from a URL: the whole download's byte cap (after decompression)
    # and deadline (every redirect included), and whether private, loopback and link-local
    # addresses may be fetched. Off, a feed URL cannot probe the machine's own network.
    feed_max_bytes: int = 5_000_000
    feed_timeout: float = 20.0
    feed_allow_private: bool = False
    feed_allow_networks: tuple[str, ...] = ()  # private networks allowed all the same
    feed_ca_file: str = ""  # CA bundle to trust instead of the system's (an internal CMS)
    # At most this many entries (the newest) are imported per run: a feed of thousands would
    # otherwise write for minutes. feed_timeout bounds the writing too.
    feed_max_entries: int = 200
    # SendGrid events: an `unknown` row is resent (`send --resend-unknown`) only this many
    # minutes after it became unknown, since SendGrid posts the events that prove delivery
    # within minutes; resending earlier could mail twice what an event was about to prove.
    resend_quiet_minutes: float = 30.0
    # This many soft bounces (SendGrid `bounce` of type "blocked") of one address within
    # `soft_bounce_window_days` suppress it on every list, as one hard bounce does.
    soft_bounce_limit: int = 3
    soft_bounce_window_days: float = 30.0

    def path(self, name: str) -> Path:
        """A directory setting resolved against the project root."""
        value = getattr(self, name)
        # bandit B101: every directory setting is a Path; the assert only narrows the type.
        assert isinstance(value, Path)  # nosec B101
        return value if value.is_absolute() else self.root / value

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'newsletter.db'}"


def load_settings(
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers; `env` defaults to the process environment."""
    root = (root or Path.cwd()).resolve()
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}
    config_file = root / CONFIG_FILE
    if config_file.exists():  # a folder or FIFO by that name is an error, not "no settings"
        for key, value in _read_toml(config_file).items():
            _refuse_secret(key, f"{config_file} key '{key}'")
            raw[key] = (value, f"{config_file} key '{key}'")
    for name, value in env.items():
        key = _env_key(name)
        if key in _FIELDS:
            raw[key] = (value, f"environment variable {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _refuse_secret(key, f"option --{key.replace('_', '-')}")
            raw[key] = (value, f"option --{key.replace('_', '-')}")
    values = {key: _coerce(key, value, origin) for key, (value, origin) in raw.items()}
    if "base_url" in values:
        _check_base_url(values["base_url"], raw["base_url"][1])
    if "from_email" in values:
        values["from_email"] = _checked_from_email(values["from_email"], raw["from_email"][1])
    if "from_name" in values:
        _check_from_name(values["from_name"], raw["from_name"][1])
    if "secret_keys" in values:
        _check_secret_keys(values["secret_keys"], raw["secret_keys"][1])
    if "trusted_proxies" in values:
        _check_networks(values["trusted_proxies"], raw["trusted_proxies"][1])
    if "rate_trend_days" in values and not 1 <= values["rate_trend_days"] <= MAX_TREND_DAYS:
        raise ConfigError(
            f"{raw['rate_trend_days'][1]}: rate_trend_days must be a whole number of days "
            f"from 1 to {MAX_TREND_DAYS} (one bar per day in the rate panel)."
        )
    _check_brand(values, raw)
    if "sendgrid_api_url" in values:
        _check_api_url(values["sendgrid_api_url"], raw["sendgrid_api_url"][1])
    if values.get("sendgrid_api_key") is not None:
        check_api_key(values["sendgrid_api_key"], raw["sendgrid_api_key"][1])
    if "sendgrid_timeout" in values:
        _check_timeout(values["sendgrid_timeout"], raw["sendgrid_timeout"][1])
    for key in ("send_lease", "send_rate_limit"):
        if key in values:
            _check_dispatch_number(key, values[key], raw[key][1])
    if "feed_max_entries" in values and values["feed_max_entries"] < 1:
        raise ConfigError(
            f"{raw['feed_max_entries'][1]}: feed_max_entries must be a whole number of "
            f"entries, 1 or more (default 200); got {values['feed_max_entries']!r}."
        )
    values["root"] = root
    return Settings(**values)


# The shortest lease: a worker beats every quarter of it, so a shorter one would have the
# heartbeat thread write to the database in a tight loop.
MIN_LEASE = 1.0


def _check_dispatch_number(key: str, value: float, origin: str) -> None:
    """The lease must be at least a second (a zero lease would take every worker for dead,
    a tiny one would beat in a tight loop); the rate ceiling may be 0 (none) but not
    negative."""
    low_ok = value >= 0 if key == "send_rate_limit" else value >= MIN_LEASE
    if math.isfinite(value) and low_ok:
        return
    need = {
        "send_lease": f"seconds, at least {MIN_LEASE:g} (default 60)",
        "send_rate_limit": "messages per second, 0 (no ceiling) or more",
    }[key]
    raise ConfigError(f"{origin}: {key} must be a number of {need}; got {value!r}.")


def _check_base_url(url: str, origin: str) -> None:
    """Links are made by appending a path to it, and the unsubscribe URL goes into the HTML
    part unescaped (one placeholder serves both parts): refuse what would break either."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or re.search(r"[\s&<>\"']", url)
    ):
        raise ConfigError(
            f"{origin}: base_url must be an http(s) address with no query, fragment, spaces "
            f"or any of & < > \" ' (for example https://news.example.org); got {url!r}."
        )


def _check_api_url(url: str, origin: str) -> None:
    """Checked before any row is claimed: a URL urllib cannot open would otherwise fail
    mid-request, where an error is easily mistaken for "sent, no answer" (`unknown`)."""
    problem = _api_url_problem(url)
    if problem:
        # A URL with a password in it is not repeated: the message may end up in a log.
        shown = "" if "password" in problem else f"; got {url!r}"
        raise ConfigError(
            f"{origin}: sendgrid_api_url {problem}; write an http(s) address with a host and "
            f"at most a port and path, such as https://api.sendgrid.com{shown}."
        )


def _api_url_problem(url: str) -> str:
    if re.search(r"[\x00-\x20\x7f]", url):
        return "contains a space or control character"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "needs the scheme http:// or https://"
    if parts.username is not None or parts.password is not None:
        # A password in the URL would be printed with it in every message that names it.
        return "must not carry a user name or password (the key goes in SENDGRID_API_KEY)"
    if not parts.hostname:
        return "has no host"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query (?...) or fragment (#...)"
    if "v3" in parts.path.lower().split("/"):
        # The mailer appends /v3/mail/send itself: with it in the base, every request is a
        # 404 and, before this check, every recipient ended `failed`.
        return (
            "must be the base URL, e.g. https://api.sendgrid.com, without /v3 or an "
            "endpoint (the mailer adds /v3/mail/send itself)"
        )
    try:
        parts.port  # noqa: B018  # urlsplit checks the port only when asked for it
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return ""


# Printable ASCII without the space: what an HTTP header value carries as-is (SendGrid keys
# are `SG.` and base64url). Anything else would break the Authorization header mid-request.
_KEY_CHARACTERS = re.compile(r"[!-~]+")
# Real keys are 69 characters; the shape is not required (tests use canary keys), but a
# key this short is a truncated paste, and one the redaction could not tell from text.
MIN_API_KEY = 20


def check_api_key(key: Secret, origin: str) -> None:
    """Refuse a key that cannot go into a header; the message never shows the key itself."""
    value = key.reveal()
    if _KEY_CHARACTERS.fullmatch(value):
        if len(value) < MIN_API_KEY:
            raise ConfigError(
                f"{origin}: the key is {len(value)} characters long; a SendGrid API key is "
                f"far longer (about 69, `SG.` and two parts), at least {MIN_API_KEY}. Copy the "
                "whole key again from SendGrid's API Keys page and set SENDGRID_API_KEY to it."
            )
        return
    position, char = next((i, c) for i, c in enumerate(value, 1) if not _KEY_CHARACTERS.match(c))
    kind = (
        "a space or line break"
        if char.isspace()
        else ("a control character" if ord(char) < 128 else "a non-ASCII character")
    )
    raise ConfigError(
        f"{origin}: the key has {kind} (U+{ord(char):04X}) at character {position} "
        f"of {len(value)}; a SendGrid key is printable ASCII with no spaces. Copy the key "
        "again from SendGrid's API Keys page (a trailing newline often comes from a file or "
        "`echo`) and set SENDGRID_API_KEY to it."
    )


MAX_SENDGRID_TIMEOUT = 3600.0  # a deadline for one request; longer is a typo (and overflows)


def _check_timeout(seconds: float, origin: str) -> None:
    if not (0 < seconds <= MAX_SENDGRID_TIMEOUT):  # also false for NaN
        raise ConfigError(
            f"{origin}: sendgrid_timeout must be a positive number of seconds, at most "
            f"{MAX_SENDGRID_TIMEOUT:.0f} (for example 10): the deadline of each whole request."
        )


def _checked_from_email(address: str, origin: str) -> str:
    """One plain address (addr-spec), in ASCII: it goes into From, List-Id and Message-ID."""
    # Imported here: ~35 ms that only a from_email set in config or environment needs.
    from email_validator import EmailNotValidError, validate_email

    try:
        if "=?" in address:
            # Valid atext, but the email package decodes it as an encoded word in headers.
            raise EmailNotValidError("'=?' would be read as an RFC 2047 encoded word.")
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ConfigError(
            f"{origin}: from_email must be one plain address such as digest@news.example.org "
            f"(no name, no angle brackets, no commas); {address!r} is not: {exc}"
        ) from None
    return str(result.ascii_email)


MAX_FROM_NAME = 200
MAX_TREND_DAYS = 31  # a bar per day; more would not fit a phone's rate table


def _check_from_name(name: str, origin: str) -> None:
    """The sender's name goes into From and List-Id: a control character (a line break, NUL...)
    could end a header line there, and no mail client can show one anyway."""
    found = CONTROL.search(name)
    if found:
        raise ConfigError(
            f"{origin}: from_name contains the control character U+{ord(found.group()):04X} "
            "(a line break, tab or similar), which cannot go into a mail header; write the "
            "name on one line without it."
        )
    if len(name) > MAX_FROM_NAME:
        raise ConfigError(f"{origin}: from_name is longer than {MAX_FROM_NAME} characters.")


# A signing key must resist an offline search from one token (a 3-character key fell in
# under a second): 256 bits, estimated from the key's length and the alphabet it draws on.
MIN_KEY_BITS = 256
KEY_HOWTO = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_HEX = frozenset("0123456789abcdefABCDEF")
_BASE64 = frozenset(string.ascii_letters + string.digits + "+/-_=")


def key_bits(key: str) -> float:
    """A conservative estimate of a key's entropy, in bits: the least of three bounds.

    - The alphabet: length x log2(size of the alphabet it uses). Hex digits count 4 bits,
      base64 in both cases 6 (what `secrets` makes); otherwise each class present (lower,
      upper, digits, other) widens the alphabet, and a run of letters that reads like a
      word ("newsletter", "Secret") counts as one pick from a large dictionary, not one
      pick per letter: a phrase is guessed by words.
    - Compression: 8 bits per byte of the key's deflated form, so repetition of any unit
      ("abcdefgh" x 7, a long run of one letter) counts once, however long the key.
    - A key of fewer than 8 distinct characters is repetition, not randomness: nothing.
    """
    if len(set(key)) < 8:
        return 0.0
    return min(_alphabet_bits(key), _compressed_bits(key))


_WORD = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{3,}")
WORD_BITS = 16.0  # a pick from a 65,536-word dictionary


def _alphabet_bits(key: str) -> float:
    if set(key) <= _HEX:
        return 4.0 * len(key)
    if set(key) <= _BASE64 and not key.islower() and not key.isupper():
        # token_urlsafe(32) has 2 bits to spare here, so no word discount (a random key
        # has letter runs too); its repetitions are the compression bound's to catch.
        return 6.0 * len(key)
    pool = sum(
        size
        for size, present in (
            (26, any(c.islower() for c in key)),
            (26, any(c.isupper() for c in key)),
            (10, any(c.isdigit() for c in key)),
            (33, any(not c.isalnum() for c in key)),
        )
        if present
    )
    words = _WORD.findall(key)
    rest = len(key) - sum(len(word) for word in words)
    per_char = math.log2(pool)
    return rest * per_char + sum(min(WORD_BITS, len(word) * per_char) for word in words)


def _compressed_bits(key: str) -> float:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw: no header to count
    packed = deflate.compress(key.encode()) + deflate.flush()
    return 8.0 * len(packed)


def _check_secret_keys(keys: tuple[Secret, ...], origin: str) -> None:
    """Refuse a guessable signing key; the message never shows the key itself."""
    for number, key in enumerate(keys, 1):
        if key_bits(key.reveal()) < MIN_KEY_BITS:
            which = f"key {number} of {len(keys)}" if len(keys) > 1 else "the key"
            raise ConfigError(
                f"{origin}: {which} is too weak to sign links (it needs at least 32 random "
                f"bytes; anyone could find it from one unsubscribe link). Generate one with "
                f"{KEY_HOWTO} and set NEWSLETTER_SECRET_KEY to it."
            )


def _check_networks(values: tuple[str, ...], origin: str) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"{origin}: {value!r} is not an IP address or network (for example "
                "10.0.0.5 or 10.0.0.0/24); list the addresses of your reverse proxies."
            ) from exc


def _env_key(name: str) -> str:
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    return name[len(ENV_PREFIX) :].lower() if name.startswith(ENV_PREFIX) else ""


# Secrets come from the environment only: newsletter.toml usually lives in git, and flags
# end up in shell history and process listings.
ENV_ONLY = {
    "sendgrid_api_key": "SENDGRID_API_KEY",
    # bandit B105: the name of an environment variable, not a password.
    "secret_keys": "NEWSLETTER_SECRET_KEY",  # nosec B105
    # bandit B105: the name of an environment variable, not a password.
    "smtp_password": "NEWSLETTER_SMTP_PASSWORD",  # nosec B105
}


def secret_values(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret set in the environment, each key of a list apart: what error text
    printed by the CLI must never contain (see newsletter.redaction)."""
    env = os.environ if env is None else env
    values = [env.get(name, "") for name in ENV_ONLY.values()]
    return tuple(part for value in values for part in (value, *value.split(",")) if part.strip())


def _refuse_secret(key: str, origin: str) -> None:
    if key in ENV_ONLY:
        raise ConfigError(
            f"{origin}: {key} is a secret and is read only from the environment; remove it "
            f"there and set {ENV_ONLY[key]} instead."
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(inputfile.read_text(path))
    except UnreadableFileError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.reason}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}. Fix the TOML.") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"{path}: the TOML is nested too deeply to read; settings are flat "
            "`name = value` lines. Fix the file."
        ) from exc
    unknown = sorted(set(data) - set(_FIELDS) - {"root"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings are: {', '.join(sorted(_FIELDS))}."
        )
    return data


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "root"}
_TYPES = get_type_hints(Settings)


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = _TYPES[key]
    try:
        if kind is Path or kind == Path:
            return Path(value)
        if kind is bool:
            return _to_bool(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind == Secret | None:
            return Secret(str(value)) if str(value) else None
        if kind == tuple[str, ...]:
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(s).strip() for s in items if str(s).strip())
        if kind == tuple[Secret, ...]:
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(Secret(s.strip()) for s in items if str(s).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: expected {_describe(kind)}, got {value!r}.") from exc


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)


def _describe(kind: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number"}.get(
        kind, "a value of another form"
    )


# --- Brand settings -----------------------------------------------------------------------

HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
MAX_BRAND_TEXT = 500


def _check_brand(values: Mapping[str, Any], raw: Mapping[str, tuple[Any, str]]) -> None:
    """The brand reaches the HTML of every email: a URL, a colour and short lines of text."""
    if values.get("brand_logo_url"):
        _check_logo_url(values["brand_logo_url"], raw["brand_logo_url"][1])
    if "brand_accent" in values:
        _check_accent(values["brand_accent"], raw["brand_accent"][1])
    if "brand_logo_width" in values and not 40 <= values["brand_logo_width"] <= 600:
        raise ConfigError(
            f"{raw['brand_logo_width'][1]}: brand_logo_width is the logo's width in px, "
            f"from 40 to 600 (the email is 600 px wide); got {values['brand_logo_width']}."
        )
    for key in ("brand_logo_alt", "footer_why"):
        if key in values:
            _check_line(key, values[key], raw[key][1])


def _check_logo_url(url: str, origin: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or re.search(r"[\s<>\"'\\]", url):
        raise ConfigError(
            f"{origin}: brand_logo_url must be an https address of an image with no spaces, "
            f"quotes or angle brackets (mail clients block http images), such as "
            f"https://news.example.org/logo.png; got {url!r}."
        )


def _check_accent(colour: str, origin: str) -> None:
    from newsletter import brand  # only a configured accent needs the colour maths

    if not HEX_COLOUR.fullmatch(colour):
        raise ConfigError(
            f"{origin}: brand_accent must be a colour written #rrggbb, such as #0b4f8a; "
            f"got {colour!r}."
        )
    ratio = brand.contrast(colour, brand.CARD_LIGHT)
    if ratio < brand.AA:
        raise ConfigError(
            f"{origin}: brand_accent {colour} has a contrast of {ratio:.1f}:1 on the white "
            f"page; headings and links in it need at least {brand.AA}:1 to be readable "
            "(WCAG AA). Choose a darker shade."
        )


def _check_line(key: str, value: str, origin: str) -> None:
    found = CONTROL.search(value)
    if found:
        raise ConfigError(
            f"{origin}: {key} contains the control character U+{ord(found.group()):04X}; "
            "write it on one line without it."
        )
    if len(value) > MAX_BRAND_TEXT:
        raise ConfigError(f"{origin}: {key} is longer than {MAX_BRAND_TEXT} characters.")
