"""Mail headers from structured values: no text we are given can become a header line.

Python's email package decodes RFC 2047 encoded words in every header value it is
handed, display names included, and then writes the decoded characters out again: a
subscriber named ``=?utf-8?q?Eve=0D=0ABcc=3A_x@evil?=`` becomes a ``Bcc:`` line. So the
headers that carry people's text (Subject, From/To/Reply-To, List-Id) are built here from
structured values and never re-parsed: a value is kept exactly as typed, and whenever it
is not plain ASCII or merely *looks* like an encoded word, we write it out as encoded
words ourselves, so a conforming reader decodes it back to exactly the characters typed
(``=?...?=`` included) and to nothing else. Control characters, which no reader can
show and which could end a header line, are refused with a ValueError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import _header_value_parser as parser
from email.header import Header
from email.headerregistry import (
    Address,
    BaseHeader,
    Group,
    HeaderRegistry,
    UniqueAddressHeader,
    UniqueUnstructuredHeader,
)
from email.message import EmailMessage
from email.policy import Policy
from typing import Any

# Nothing a mail client can show and everything that could end a line somewhere:
# C0 and C1 controls (tab included), DEL, the Unicode line and paragraph separators, and
# the bidi embeddings, overrides and isolates, which reorder what a reader sees after them.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Words of RFC 5322 atext separated by single spaces: the only names written bare. Anything
# else is a quoted string, which keeps specials and every space exactly as typed.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 2047 keeps an encoded word under 76 characters, whatever the line limit is.
EW_LINE = 76


def check_text(field: str, text: str) -> str:
    """`text` unchanged, or ValueError when it holds a control character."""
    found = CONTROL.search(text)
    if found:
        raise ValueError(
            f"the {field} contains the control character U+{ord(found.group()):04X}, "
            "which cannot go into a mail header"
        )
    return text


def needs_encoding(text: str) -> bool:
    """Non-ASCII text, or text a decoder would take for an encoded word (``=?``)."""
    return "=?" in text or not text.isascii()


def encoded_words(text: str, header_name: str, linesep: str) -> str:
    """`text` as RFC 2047 UTF-8 encoded words, folded so each line stays under 76 characters.

    Decoding gives back exactly `text`: ``=`` and ``?`` are themselves encoded, and a
    decoder never decodes what it decoded.
    """
    return Header(text, "utf-8", header_name=header_name).encode(
        linesep=linesep, maxlinelen=EW_LINE
    )


def phrase(text: str, header_name: str, linesep: str) -> str:
    """A display name or List-Id description as it goes on the wire."""
    if needs_encoding(text):
        return encoded_words(text, header_name, linesep)
    if _ATOMS.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# BaseHeader named too: the registry mixes it in at run time, typeshed wants it declared
# (and types the mixins' max_count and init a little differently from BaseHeader's).
class TextHeader(UniqueUnstructuredHeader, BaseHeader):  # type: ignore[misc]
    """Subject: the text as given, never decoded; encoded by us when it needs encoding."""

    @classmethod
    def parse(cls, value: Any, kwds: dict[str, Any]) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a {cls.__name__} takes text, not {type(value).__name__}")
        text = check_text("subject", value)
        # The parse tree only serves the email package's folding of plain text.
        kwds["parse_tree"] = parser.get_unstructured("" if needs_encoding(text) else text)
        kwds["decoded"] = text

    def fold(self, *, policy: Policy) -> str:
        if not needs_encoding(str(self)):
            return super().fold(policy=policy)
        return f"{self.name}: {encoded_words(str(self), self.name, policy.linesep)}{policy.linesep}"


# BaseHeader named too: the registry mixes it in at run time, typeshed wants it declared
# (and types the mixins' max_count and init a little differently from BaseHeader's).
class MailboxHeader(UniqueAddressHeader, BaseHeader):  # type: ignore[misc]
    """From, To, Reply-To...: `Address` objects only, their display names never decoded."""

    @classmethod
    def parse(cls, value: Any, kwds: dict[str, Any]) -> None:
        if isinstance(value, Group):
            cls._parse_empty_group(value, kwds)
            return
        addresses = _addresses(value)
        for address in addresses:
            check_text("display name", address.display_name)
            if not address.addr_spec.isascii():
                raise ValueError(f"the address {address.addr_spec!r} needs SMTPUTF8")
        kwds["groups"] = [Group(None, [address]) for address in addresses]
        kwds["defects"] = []
        # str() of the header, which smtplib parses for the envelope: Address quotes the name.
        kwds["decoded"] = ", ".join(str(a) for a in addresses)
        # Only the bare addresses are parsed (they were validated by Address itself); the
        # names are written out by `fold`, never read back through the parser.
        kwds["parse_tree"] = cls.value_parser(", ".join(a.addr_spec for a in addresses))

    @classmethod
    def _parse_empty_group(cls, group: Group, kwds: dict[str, Any]) -> None:
        """`undisclosed-recipients:;` (RFC 5322 3.4): a named group with no one in it, for a
        message that names no recipient. Only a fixed name of plain words is taken."""
        if group.addresses or not _ATOMS.fullmatch(group.display_name or ""):
            raise ValueError("only an empty group with a plain name goes into an address header")
        kwds["groups"] = [group]
        kwds["defects"] = []
        kwds["decoded"] = f"{group.display_name}:;"
        kwds["parse_tree"] = cls.value_parser(kwds["decoded"])

    def fold(self, *, policy: Policy) -> str:
        if not self.addresses:  # an empty group: its name was checked to be plain words
            return f"{self.name}: {self.groups[0].display_name}:;{policy.linesep}"
        mailboxes = ", ".join(_mailbox(a, self.name, policy.linesep) for a in self.addresses)
        return f"{self.name}: {mailboxes}{policy.linesep}"


def _addresses(value: Any) -> tuple[Address, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(item, Address) for item in items):
        # A string would be parsed, and its encoded words decoded into header syntax.
        raise TypeError("address headers take email.headerregistry.Address objects, not text")
    return tuple(items)


def _mailbox(address: Address, header_name: str, linesep: str) -> str:
    if not address.display_name:
        return address.addr_spec
    return f"{phrase(address.display_name, header_name, linesep)} <{address.addr_spec}>"


@dataclass(frozen=True)
class ListId:
    """RFC 2919 List-Id: a description for people and the list's identifier under our domain."""

    description: str
    identifier: str  # e.g. weekly.news.example.org

    def __post_init__(self) -> None:
        check_text("list description", self.description)
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", self.identifier):
            raise ValueError(f"{self.identifier!r} is not a List-Id identifier (a dot-atom)")

    def wire(self, linesep: str = "") -> str:
        """The header value as sent; unfolded (one line) by default, as SendGrid wants it."""
        if not self.description:
            return f"<{self.identifier}>"
        return f"{phrase(self.description, 'List-Id', linesep)} <{self.identifier}>"

    def __str__(self) -> str:
        return self.wire()


# BaseHeader named too: the registry mixes it in at run time, typeshed wants it declared
# (and types the mixins' max_count and init a little differently from BaseHeader's).
class ListIdHeader(UniqueUnstructuredHeader, BaseHeader):  # type: ignore[misc]
    """List-Id from a `ListId`, written exactly as `ListId.wire` spells it."""

    @classmethod
    def parse(cls, value: Any, kwds: dict[str, Any]) -> None:
        if not isinstance(value, ListId):
            raise TypeError("List-Id takes a newsletter.headers.ListId, not text")
        kwds["parse_tree"] = parser.get_unstructured("")
        kwds["decoded"] = value.wire()
        kwds["list_id"] = value

    def init(self, *args: Any, **kw: Any) -> None:
        self.list_id: ListId = kw.pop("list_id")
        super().init(*args, **kw)

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self.list_id.wire(policy.linesep)}{policy.linesep}"


def registry() -> HeaderRegistry:
    """The email package's header classes, with ours for every header that carries text."""
    headers = HeaderRegistry()
    for name in ("from", "sender", "to", "cc", "bcc", "reply-to"):
        headers.map_to_type(name, MailboxHeader)
    headers.map_to_type("subject", TextHeader)
    headers.map_to_type("list-id", ListIdHeader)
    return headers


def addresses(message: EmailMessage, name: str) -> list[Address]:
    """The Address objects of every `name` header (From, To...), as they were given."""
    found: list[Address] = []
    for value in message.get_all(name, []):
        found.extend(getattr(value, "addresses", ()))
    return found


def wire_value(message: EmailMessage, name: str) -> str:
    """A header's value as it goes on the wire, unfolded to one line (for SendGrid)."""
    folded = message.policy.fold(name, message[name])
    return "".join(folded.splitlines())[len(name) + 2 :]
