"""The answer formats of the impact.com-compatible routes: ``.json`` and ``.xml`` paths, XML answers.

impact.com serves every resource at ``…/Actions``, ``…/Actions.json`` and ``…/Actions.xml``; its clients
(the Singer ``tap-impact`` among them) ask for ``.json`` paths. ``CompatFormat`` is an ASGI middleware
in front of the routes: under ``/Advertisers/`` it takes a ``.json`` or ``.xml`` suffix off the last
path segment before routing (so that one route serves the three paths; the suffix is kept in the scope
for the paging URIs, ``compat_common.envelope``), and when XML was asked (``.xml``, or ``Accept:
application/xml`` or ``text/xml`` without a suffix) it turns the route's JSON answer into impact.com's
XML (``to_xml``). Answers of these routes are bounded pages, so the JSON answer is taken whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/Advertisers/"
SUFFIX_KEY = "payoutdesk.compat_suffix"  # the scope's key for the suffix the path had ("", ".json", ".xml")
XML_TYPE = "application/xml; charset=utf-8"
ROOT = "ImpactRadiusResponse"
# the paging fields of a list (compat_common.envelope), written as attributes of the list's element
PAGING = ("@page", "@numpages", "@pagesize", "@total", "@start", "@end", "@uri", "@firstpageuri",
          "@previouspageuri", "@nextpageuri", "@lastpageuri")
# the element of one record of a list, where it is not the list's name without its final "s"
_RECORD = {"ActionItems": "ActionItem", "Items": "Item", "Errors": "Error", "ErrorDetail": "ErrorDetail",
           "APISubmission": "APISubmission"}


def split_suffix(path: str) -> tuple[str, str]:
    """``(path without the suffix, suffix)`` for a compatible path; the suffix is ``.json``, ``.xml`` or ``""``."""
    if path.startswith(PREFIX):
        head, _, last = path.rpartition("/")
        stem, dot, ext = last.rpartition(".")
        if dot and stem and ext.lower() in ("json", "xml"):
            return f"{head}/{stem}", f".{ext.lower()}"
    return path, ""


def wants_xml(suffix: str, accept: str) -> bool:
    """XML for ``.xml``; without a suffix, when the Accept header names XML before (or without) JSON."""
    if suffix:
        return suffix == ".xml"
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0
        if q <= 0:
            continue
        if media in ("application/xml", "text/xml"):
            return True
        if media == "application/json" or media.endswith("+json"):
            return False
    return False


def record_name(list_name: str) -> str:
    """The element of one record of the list ``list_name`` (``Actions`` → ``Action``)."""
    if list_name in _RECORD:
        return _RECORD[list_name]
    if list_name.endswith("ies"):
        return list_name[:-3] + "y"
    if list_name.endswith("s") and len(list_name) > 1:
        return list_name[:-1]
    return list_name


def _name(key: str) -> str:
    """An XML element name for a JSON key (impact.com's keys are already names; anything else is made one)."""
    out = "".join(c if c.isalnum() or c in "_-." else "_" for c in key)
    if not out or not (out[0].isalpha() or out[0] == "_") or out.lower().startswith("xml"):
        out = "_" + out
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return escape(_clean(str(value)))


def _clean(text: str) -> str:
    """Characters XML 1.0 cannot hold are left out (stored text holds none; this keeps the answer well formed)."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
                   or c >= "\U00010000")


def _element(name: str, value: Any, out: list[str]) -> None:
    tag = _name(name)
    if isinstance(value, dict):
        attrs = ""
        if any(k in value for k in PAGING):
            attrs = "".join(f" {k[1:]}={quoteattr(_clean(str(value[k])))}" for k in PAGING if k in value)
        out.append(f"<{tag}{attrs}>")
        for k, v in value.items():
            if k not in PAGING:
                _element(k, v, out)
        out.append(f"</{tag}>")
    elif isinstance(value, list):
        out.append(f"<{tag}>")
        child = record_name(name)
        for v in value:
            _element(child, v, out)
        out.append(f"</{tag}>")
    else:
        out.append(f"<{tag}>{_text(value)}</{tag}>")


def _paged_list(payload: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    for k, v in payload.items():
        if k not in PAGING and isinstance(v, list):
            yield k, v


def to_xml(payload: Any) -> bytes:
    """impact.com's XML for a JSON answer of a compatible route.

    The root is ``ImpactRadiusResponse``. A paged list (``"@page"`` …, and the list under its key) is
    the list's element carrying the paging fields as attributes without their ``@`` (``<Actions page="1"
    numpages="3" … nextpageuri="…">``) with one element per record (``<Action>``); every other key is an
    element of the same name, nested objects and lists nested likewise (``<Items><Item>…``). Values are
    written as their JSON text (numbers exactly as sent, ``true``/``false``, null empty).
    """
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{ROOT}>"]
    if isinstance(payload, dict):
        lists = list(_paged_list(payload)) if any(k in payload for k in PAGING) else []
        if len(lists) == 1:
            key, items = lists[0]
            paging = {k: payload[k] for k in PAGING if k in payload}
            rest = {k: v for k, v in payload.items() if k not in paging and k != key}
            for k, v in rest.items():
                _element(k, v, out)
            attrs = "".join(f" {k[1:]}={quoteattr(_clean(str(v)))}" for k, v in paging.items())
            tag = _name(key)
            out.append(f"<{tag}{attrs}>")
            child = record_name(key)
            for item in items:
                _element(child, item, out)
            out.append(f"</{tag}>")
        else:
            for k, v in payload.items():
                _element(k, v, out)
    elif isinstance(payload, list):
        for v in payload:
            _element("Item", v, out)
    else:
        out.append(_text(payload))
    out.append(f"</{ROOT}>")
    return "".join(out).encode()


def json_to_xml(body: bytes) -> bytes:
    """``to_xml`` of a JSON text, its numbers kept exactly as written (``80.00`` stays ``80.00``)."""
    return to_xml(json.loads(body, parse_float=str, parse_int=str))


_JSON_TYPES = ("application/json", "application/problem+json")


class CompatFormat:
    """The ``.json``/``.xml`` suffixes and the XML answers of the compatible routes (see the module)."""

    def __init__(self, app: ASGIApp, convert: Callable[[bytes], bytes] = json_to_xml) -> None:
        self.app = app
        self.convert = convert

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        path, suffix = split_suffix(scope["path"])
        if suffix:
            raw = scope.get("raw_path")
            scope = {**scope, "path": path}
            if isinstance(raw, bytes):
                scope["raw_path"] = raw[: len(raw) - len(suffix)] if raw.lower().endswith(suffix.encode()) else raw
        scope[SUFFIX_KEY] = suffix
        accept = ""
        for name, value in scope.get("headers", ()):
            if name == b"accept":
                accept = value.decode("latin-1")
                break
        if not wants_xml(suffix, accept):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _XmlAnswer(send, self.convert))


class _XmlAnswer:
    """Collects a JSON answer and sends it as XML (any other answer passes as it is)."""

    def __init__(self, send: Send, convert: Callable[[bytes], bytes]) -> None:
        self.send = send
        self.convert = convert
        self.start: Message | None = None
        self.parts: list[bytes] = []
        self.passing = False

    async def __call__(self, message: Message) -> None:
        if self.passing:
            await self.send(message)
            return
        if message["type"] == "http.response.start":
            ctype = b""
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    ctype = value.split(b";")[0].strip().lower()
            if ctype.decode("latin-1") not in _JSON_TYPES:
                self.passing = True
                await self.send(message)
                return
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.parts)
        self.parts = []
        try:
            xml = self.convert(body)
        except ValueError:  # not JSON after all: sent as it is
            xml, headers = body, list(self.start.get("headers", ()))
        else:
            headers = [(n, v) for n, v in self.start.get("headers", ())
                       if n.lower() not in (b"content-type", b"content-length")]
            headers += [(b"content-type", XML_TYPE.encode()), (b"content-length", str(len(xml)).encode())]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": xml, "more_body": False})
