"""The SMTP mailer: one connection per batch, one message per recipient (Mailpit, small lists)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import ssl
from email.message import EmailMessage

from newsletter.config import Settings
from newsletter.errors import AuthError, ConfigError, RefusedError, UnreachableError
from newsletter.headers import addresses
from newsletter.message import UNBUILDABLE, personal_message, unbuildable
from newsletter.models import BatchOutcome, RenderedEmail, SendBatch, SendResult

SECURITY = ("none", "starttls", "tls")


class SmtpMailer:
    name = "smtp"
    max_batch = 100  # per connection; SMTP servers commonly cap messages per session
    sandbox = False

    def __init__(self, settings: Settings) -> None:
        if settings.smtp_security not in SECURITY:
            raise ConfigError(
                f"Setting smtp_security is {settings.smtp_security!r}; use none, starttls or tls."
            )
        _refuse_clear_text_login(settings)
        self.settings = settings

    def __repr__(self) -> str:
        return f"SmtpMailer({self.settings.smtp_host}:{self.settings.smtp_port})"

    def send_message(self, message: EmailMessage) -> str:
        # The envelope comes from the structured headers, not from re-parsing their text.
        sender = [a.addr_spec for a in addresses(message, "From")]
        recipients = [a.addr_spec for a in addresses(message, "To")]
        with self._connect() as client:
            try:
                client.send_message(message, from_addr=sender[0], to_addrs=recipients)
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _reason in exc.recipients.values()]
                raise _refusal(min(codes, default=0), "refused the recipient") from None
            except smtplib.SMTPResponseException as exc:
                raise _refusal(exc.smtp_code, _text(exc.smtp_error)) from None
            except (smtplib.SMTPException, OSError) as exc:
                raise UnreachableError(
                    f"The SMTP server {self.settings.smtp_host}:{self.settings.smtp_port} "
                    f"dropped the connection ({type(exc).__name__}); try again later."
                ) from None
        return str(message.get("Message-ID", ""))

    def send_batch(self, email: RenderedEmail, batch: SendBatch) -> BatchOutcome:
        results: list[SendResult] = []
        with self._connect() as client:
            for index, (recipient, key) in enumerate(
                zip(batch.recipients, batch.keys, strict=True)
            ):
                try:
                    # Dated as it leaves, not with the date (see build_message).
                    message = personal_message(
                        email, self.settings, recipient, batch, sent_at=dt.datetime.now(dt.UTC)
                    )
                except UNBUILDABLE as exc:
                    results.append(unbuildable(key, exc))
                    continue
                result = _deliver(client, message, recipient.email, key)
                results.append(result)
                if result.state == "unknown" or client.sock is None:
                    # The connection is gone: nobody after this one was attempted.
                    rest = batch.keys[index + 1 :]
                    if rest:
                        results.append(SendResult(rest, "released"))
                    break
        return BatchOutcome(tuple(results))

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            client = _open(s)
            if s.smtp_username:
                _login(client, s)
        except smtplib.SMTPAuthenticationError:
            raise AuthError(
                f"The SMTP server {s.smtp_host}:{s.smtp_port} refused the login for "
                f"{s.smtp_username!r}. Check smtp_username and NEWSLETTER_SMTP_PASSWORD."
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise UnreachableError(
                f"Cannot reach the SMTP server {s.smtp_host}:{s.smtp_port} "
                f"({type(exc).__name__}); nothing was sent. Check smtp_host and smtp_port."
            ) from None
        return client


def _login(client: smtplib.SMTP, s: Settings) -> None:
    password = s.smtp_password.reveal() if s.smtp_password else ""
    try:
        client.login(s.smtp_username, password)
    except smtplib.SMTPNotSupportedError:
        # The server answered, it just offers no AUTH (many offer it only after STARTTLS).
        client.close()
        raise AuthError(
            f"The SMTP server {s.smtp_host}:{s.smtp_port} offers no login (no AUTH in its "
            f"EHLO answer), but smtp_username is set; nothing was sent. Remove smtp_username "
            "if the server needs none, or set smtp_security to starttls or tls if it offers "
            "AUTH only over TLS."
        ) from None
    except smtplib.SMTPException as exc:
        if isinstance(exc, smtplib.SMTPResponseException):
            raise  # an answer to our AUTH: refused credentials or a server error
        # smtplib found no AUTH mechanism it shares with the server.
        client.close()
        raise AuthError(
            f"The SMTP server {s.smtp_host}:{s.smtp_port} offers no login method this "
            f"program supports (it offers: {client.esmtp_features.get('auth', '').strip()}); "
            "nothing was sent. Use a server or port that offers AUTH PLAIN, LOGIN or CRAM-MD5."
        ) from None


def _refuse_clear_text_login(s: Settings) -> None:
    """Without TLS the password crosses the network in clear; only loopback is safe."""
    if s.smtp_security != "none" or not s.smtp_username or _is_loopback(s.smtp_host):
        return
    raise ConfigError(
        f"Setting smtp_security is 'none' but smtp_username is set, so the password would "
        f"cross the network to smtp_host {s.smtp_host!r} in clear. Set smtp_security to "
        "starttls or tls, or use a loopback smtp_host (127.0.0.1, ::1, localhost)."
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not resolved here, so not trusted
        return False


def _open(s: Settings) -> smtplib.SMTP:
    # Certificates are always verified; smtp_ca_file names the CA to trust, never "none".
    context = ssl.create_default_context(cafile=s.smtp_ca_file or None)
    if s.smtp_security == "tls":
        return smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=context)
    client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
    if s.smtp_security == "starttls":
        client.starttls(context=context)
    return client


def _deliver(client: smtplib.SMTP, message: EmailMessage, address: str, key: str) -> SendResult:
    try:
        client.send_message(message, to_addrs=[address])
    except smtplib.SMTPRecipientsRefused as exc:
        code, reason = exc.recipients.get(address, (0, b""))
        return SendResult((key,), "failed", error=f"{code} {_text(reason)}")
    except smtplib.SMTPResponseException as exc:
        # The server answered: it did not take this message (sender or data refused).
        _reset(client)
        return SendResult((key,), "failed", error=f"{exc.smtp_code} {_text(exc.smtp_error)}")
    except smtplib.SMTPNotSupportedError as exc:
        # Raised before MAIL FROM (e.g. the address needs SMTPUTF8): nothing was sent.
        return SendResult((key,), "failed", error=str(exc))
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        return SendResult((key,), "unknown", error=f"connection lost ({type(exc).__name__})")
    return SendResult((key,), "sent")


def _refusal(code: int, reason: str) -> UnreachableError | RefusedError:
    """A 4xx (greylisting, a full queue) is for now: retry later. A 5xx is for good."""
    text = f"The SMTP server answered {code} {reason}"
    if 500 <= code < 600:
        return RefusedError(f"{text}; it will not take this message.")
    return UnreachableError(f"{text}; try again later.")


def _reset(client: smtplib.SMTP) -> None:
    """Abort the refused transaction; if the server hung up (e.g. after a 421), close
    our side so send_batch releases the rest instead of the run aborting."""
    try:
        client.rset()
    except (smtplib.SMTPException, OSError):
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
