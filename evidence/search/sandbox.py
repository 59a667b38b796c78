"""The scraping sandbox: which hits may become evidence, how long a search may take, how big.

Why: search results are untrusted input that ends up verbatim in LLM prompts and in the
database. The sandbox bounds that input before anything is stored:

1. **Domain allowlist** (per window, ``Window.allowed_domains``). Entries are host names that
   match themselves and their subdomains (``example.org`` admits ``news.example.org``). The
   wildcard ``"*"`` admits any *public* host. The default is ``["*"]``: a news search must be
   able to return any outlet, and the simulator's corpus host (``news.example``) is public in
   that sense. Whatever the list says, a URL must be ``https`` and carry no credentials; IP
   literals, ``localhost`` and private names (``.local``, ``.internal``, ``.localhost``,
   ``.lan``, ``.home.arpa``, dot-less hosts) are refused unless listed explicitly, so an
   injected result cannot point an operator (or a later scraper) at internal addresses.
2. **Per-request timeout** (``Window.search_timeout_s``, else the ``JUDGE_SEARCH_TIMEOUT_S``
   setting, else 45 s as on the original's temporal branch): handed to the adapter, which
   enforces it on the HTTP call.
3. **Size cap** on each hit's markdown (200 KB of UTF-8 by default): longer markdown is cut at
   a character boundary and the evidence row gets an ``l0_note`` saying so. Transform prompts
   truncate their input further (20k characters, ``evidence.prompts``).
4. **Secrets**: the API key is read from settings by the adapter factory and passed only to the
   adapter; error messages are scrubbed of it (:func:`scrub`), so neither logs nor
   ``WindowRun.last_error`` can carry it. The key is only sent over ``https`` or to a loopback
   host (:func:`api_url_refusal`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ALLOWED_DOMAINS: tuple[str, ...] = ("*",)
DEFAULT_TIMEOUT_S = 45.0
MAX_MARKDOWN_BYTES = 200_000
MAX_URL_CHARS = 2000  # Evidence.url max_length
MAX_TITLE_CHARS = 1000  # Evidence.title max_length

_PRIVATE_SUFFIXES = (".local", ".internal", ".localhost", ".lan", ".home.arpa", ".intranet")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SandboxConfigError(ValueError):
    """An allowlist entry or limit that cannot be honoured."""


def normalize_domains(domains: Iterable[str] | None) -> tuple[str, ...]:
    """Lower-cased, de-duplicated entries; empty or None means the default (``["*"]``)."""
    out: list[str] = []
    for raw in domains or ():
        entry = str(raw).strip().lower().rstrip(".")
        if entry.startswith("*."):
            entry = entry[2:]  # "*.example.org" reads naturally; suffix matching covers it
        if not entry:
            continue
        if entry != "*" and ("/" in entry or "@" in entry or (":" in entry and not _is_ip(entry))):
            raise SandboxConfigError(
                f"allowlist entry {raw!r} must be a host name such as example.org (no scheme, "
                "path or port), or '*' for any public host"
            )
        if entry not in out:
            out.append(entry)
    return tuple(out) or DEFAULT_ALLOWED_DOMAINS


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_public_name(host: str) -> bool:
    if _is_ip(host) or host in _LOOPBACK_HOSTS or "." not in host:
        return False
    return not host.endswith(_PRIVATE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The limits one window's collection runs under (frozen into the window run)."""

    allowed_domains: tuple[str, ...] = DEFAULT_ALLOWED_DOMAINS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_markdown_bytes: int = MAX_MARKDOWN_BYTES

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise SandboxConfigError(f"search timeout must be positive, got {self.timeout_s}")
        if self.max_markdown_bytes < 1:
            raise SandboxConfigError("max_markdown_bytes must be at least 1")

    @classmethod
    def build(
        cls,
        *,
        allowed_domains: Sequence[str] | None = None,
        timeout_s: float | None = None,
        max_markdown_bytes: int | None = None,
    ) -> Sandbox:
        return cls(
            allowed_domains=normalize_domains(allowed_domains),
            timeout_s=float(timeout_s) if timeout_s is not None else DEFAULT_TIMEOUT_S,
            max_markdown_bytes=int(max_markdown_bytes or MAX_MARKDOWN_BYTES),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed_domains": list(self.allowed_domains),
            "timeout_s": self.timeout_s,
            "max_markdown_bytes": self.max_markdown_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Sandbox:
        data = data or {}
        return cls.build(
            allowed_domains=data.get("allowed_domains"),
            timeout_s=data.get("timeout_s"),
            max_markdown_bytes=data.get("max_markdown_bytes"),
        )

    def url_refusal(self, url: str) -> str | None:
        """Why ``url`` may not become evidence, or None when it may."""
        if len(url) > MAX_URL_CHARS:
            return f"url longer than {MAX_URL_CHARS} characters"
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
        except ValueError:
            return "unparseable url"
        if parts.scheme != "https":
            return f"scheme {parts.scheme or '(none)'!r} is not https"
        if not host:
            return "url has no host"
        if parts.username or parts.password:
            return "url carries credentials"
        listed = [d for d in self.allowed_domains if d != "*"]
        if any(host == d or host.endswith("." + d) for d in listed):
            return None
        if "*" in self.allowed_domains:
            return None if _is_public_name(host) else f"host {host!r} is not a public host name"
        return f"host {host!r} is not in the allowlist"

    def cap_markdown(self, markdown: str) -> tuple[str, str]:
        """``(text, note)``: the markdown within the byte cap, and a note when it was cut."""
        data = markdown.encode("utf-8")
        if len(data) <= self.max_markdown_bytes:
            return markdown, ""
        cut = data[: self.max_markdown_bytes].decode("utf-8", errors="ignore")
        note = (
            f"l0 truncated to {len(cut.encode('utf-8'))} of {len(data)} bytes "
            f"(sandbox cap {self.max_markdown_bytes})"
        )
        return cut, note


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``***`` (for messages, logs and last_error)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def is_loopback_url(url: str) -> bool:
    """True for ``http(s)://localhost``/``127.x``/``[::1]`` URLs (a local simulator)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def api_url_refusal(api_url: str) -> str | None:
    """Why the API key must not be sent to ``api_url`` (cleartext to a non-loopback host)."""
    try:
        parts = urlsplit(api_url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return f"unparseable API URL {api_url!r}"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and is_loopback_url(api_url):
        return None
    return (
        f"refusing to send the search API key to {parts.scheme}://{host}: use https (plain "
        "http is allowed only for a loopback simulator)"
    )
