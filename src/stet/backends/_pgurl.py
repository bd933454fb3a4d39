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


def _split(url: str) -> tuple[str, str, str, str, list[str]]:
    """``scheme://userinfo@hosts/path?query`` into (scheme, userinfo, hosts and path,
    password or "", query items), by hand: libpq URLs may hold several ``host:port``s
    and may leave the host out, which ``urllib`` does not keep as they are."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    password = ""
    if at and ":" in userinfo:
        userinfo, _, password = userinfo.partition(":")
    return (scheme, userinfo + at, hosts + slash + path, password,
            query.split("&") if query else [])


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and ``repr``)."""
    scheme, userinfo, location, password, items = _split(url)
    if password:
        userinfo = userinfo[:-1] + ":***@"
    items = [item.split("=", 1)[0] + "=***"
             if unquote(item.split("=", 1)[0]).lower() == "password" else item
             for item in items]
    return f"{scheme}://{userinfo}{location}" + ("?" + "&".join(items) if items else "")


class _Target:
    """What a store URL says: the libpq URL (no ``table``), the table, and secrets."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {mask_url(url)!r}")
        self.display = mask_url(url)
        scheme, userinfo, location, password, items = _split(url)
        table: str | None = None
        kept: list[str] = []
        self.secrets: list[str] = []
        for item in items:
            name, _, value = item.partition("=")
            if unquote(name) == "table":
                table = unquote(value)
                continue
            if unquote(name).lower() == "password" and value:
                self.secrets += [value, unquote(value)]
            kept.append(item)
        if password:
            self.secrets += [password, unquote(password), quote(unquote(password), safe="")]
        env_pw = os.environ.get("PGPASSWORD")
        if env_pw:
            self.secrets.append(env_pw)
        self.secrets = sorted({s for s in self.secrets if s}, key=len, reverse=True)
        self.table = _check_table(DEFAULT_TABLE if table is None else table, self.display)
        if password:
            userinfo = userinfo[:-1] + ":" + password + "@"
        self.url = f"{scheme}://{userinfo}{location}" + ("?" + "&".join(kept) if kept else "")
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
