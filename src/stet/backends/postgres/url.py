"""PostgreSQL store URLs: recognising them, splitting off ``table``, masking passwords."""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote

__all__ = ["DEFAULT_TABLE", "SCHEMES", "is_postgres_url", "mask_url", "url_scheme"]

DEFAULT_TABLE = "stet_records"
SCHEMES = ("postgresql", "postgres")
_SUFFIXES = ("_failures", "_meta", "_claims", "_workers")
_MAX_TABLE_BYTES = 63 - max(len(s) for s in _SUFFIXES)  # PostgreSQL truncates at 63
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_postgres_url(path: object) -> bool:
    """Whether ``path`` is a ``postgresql://`` or ``postgres://`` URL."""
    if not isinstance(path, str):
        return False
    m = _URL_RE.match(path)
    return m is not None and m.group(1).lower() in SCHEMES


def url_scheme(path: object) -> str | None:
    """The scheme of a URL-shaped store string (``None`` for a file path)."""
    if not isinstance(path, str):
        return None
    m = _URL_RE.match(path)
    return m.group(1) if m else None


class _Parts:
    """A URL as libpq reads it: ``scheme://[user[:password]@]location[?query]``.

    libpq ends the user part at the first ``@`` or ``/`` (whichever comes first), the
    location (hosts, ports, database) at the first ``?`` after it, and takes ``#``
    literally. A password holding an unencoded ``/``, ``?``, ``#`` or ``@`` is therefore
    read as something else (``postgresql://bob:simple/pw@host/db`` has host ``bob``, port
    ``simple`` and database ``pw@host/db``): ``ambiguous`` says so, and ``shown`` then
    masks everything up to the last ``@``, as a person would read it."""

    def __init__(self, url: str) -> None:
        self.scheme, _, rest = url.partition("://")
        m = _USER_END.search(rest)
        self.has_user = m is not None and m.group() == "@"
        if m is not None and self.has_user:
            userinfo, after = rest[:m.start()], rest[m.end():]
        else:
            userinfo, after = "", rest
        self.user, colon, self.password = userinfo.partition(":")
        self.has_password = bool(colon)
        self.location, q, query = after.partition("?")
        self.items = query.split("&") if q and query else []
        last_at = rest.rfind("@")
        # An "@" after the one libpq ends the user part at (or where it sees no user),
        # with a ":" before it: perhaps a password that needs percent-encoding.
        self.ambiguous = last_at >= 0 and ":" in rest[:last_at] and (
            m is None or last_at != m.start())
        self.bare = any(item.count("=") != 1 for item in self.items)
        if self.ambiguous:
            self.user = rest[:last_at].partition(":")[0]
            tail = rest[last_at + 1:]
            self.location, q, query = tail.partition("?")
            self.items = query.split("&") if q and query else []
            self.has_user = self.has_password = True

    def shown(self) -> str:
        userinfo = ""
        if self.has_user:
            userinfo = self.user + (":***" if self.has_password else "") + "@"
        items = [_mask_item(item) for item in self.items]
        return (f"{self.scheme}://{userinfo}{self.location}"
                + ("?" + "&".join(items) if items else ""))


_USER_END = re.compile(r"[@/]")
#: What libpq refuses in a URL (and would echo, password and all): a "%" not followed by
#: two hex digits, "%00", a space.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00| ")


def _mask_item(item: str) -> str:
    name, eq, _ = item.partition("=")
    if not eq:
        return "***"  # not a parameter: perhaps the rest of a password holding "&"
    return name + "=***" if unquote(name).lower() == "password" else item


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and ``repr``): the
    password libpq would read, and whatever a person would read as one."""
    if "://" not in url:
        return url
    return _Parts(url).shown()


class _Target:
    """What a store URL says: the libpq URL (no ``table``), the table, and secrets."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {mask_url(url)!r}")
        parts = _Parts(url)
        self.display = parts.shown()
        bad_escape = _BAD_ESCAPE.search(url) is not None
        if parts.ambiguous or parts.bare or bad_escape:
            raise ValueError(
                f"store {self.display!r} is not a URL libpq reads as meant: "
                + ("an '@' is not where the user part ends, " if parts.ambiguous else
                   "a query item has no '=' or several, " if parts.bare else
                   "a space, '%00' or a '%' not followed by two hex digits, ")
                + "so a password probably holds a character that must be percent-encoded "
                "('/' as %2F, '?' as %3F, '#' as %23, '@' as %40, '&' as %26, '=' as %3D, "
                "'%' as %25, "
                "' ' as %20; "
                "urllib.parse.quote(password, safe='') does it), or put the password "
                "in PGPASSWORD or ~/.pgpass instead"
            )
        table: str | None = None
        kept: list[str] = []
        self.secrets: list[str] = []
        for item in parts.items:
            name, _, value = item.partition("=")
            if unquote(name) == "table":
                table = unquote(value)
                continue
            if unquote(name).lower() == "password" and value:
                self.secrets += [value, unquote(value)]
            kept.append(item)
        password = parts.password
        if parts.has_password and password:
            self.secrets += [password, unquote(password), quote(unquote(password), safe="")]
        env_pw = os.environ.get("PGPASSWORD")
        if env_pw:
            self.secrets.append(env_pw)
        self.secrets = sorted({s for s in self.secrets if s}, key=len, reverse=True)
        self.table = _check_table(DEFAULT_TABLE if table is None else table, self.display)
        userinfo = ""
        if parts.has_user:
            userinfo = parts.user + (":" + password if parts.has_password else "") + "@"
        self.url = (f"{parts.scheme}://{userinfo}{parts.location}"
                    + ("?" + "&".join(kept) if kept else ""))
        # Identifies the store in this process (password left out).
        self.key = f"{mask_url(self.url)}\x00{self.table}"

    def scrub(self, text: str) -> str:
        """``text`` with every form of the password replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _check_table(name: str, display: str) -> str:
    problem = ""
    if not name:
        problem = "is empty"
    elif len(name.encode("utf-8")) > _MAX_TABLE_BYTES:
        problem = f"is longer than {_MAX_TABLE_BYTES} bytes"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    if problem:
        raise ValueError(
            f"the table name {name!r} in store {display!r} {problem}; name a table with "
            f"?table=NAME (any other text is allowed: it is always quoted)"
        )
    return name
