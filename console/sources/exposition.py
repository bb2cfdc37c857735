"""A fast parser of the Prometheus text exposition format 0.0.4 (what dcgm-exporter and our agent serve).

prometheus_client's parser builds a ``Metric`` object per family and re-parses every label set character
by character; at a thousand nodes a second that alone would use a core. This parser splits each line at its
braces and caches the parsed label dictionary by its raw text: one node repeats the same few label sets (one
per GPU) across every metric, and across polls, so nearly every line costs a dict lookup, a split and a float.

The result is deliberately compact: ``samples`` is a list of ``(name, labels, value, timestamp_ms)`` tuples.
``labels`` dictionaries are shared between samples (and between parses with the same ``ExpositionParser``):
treat them as read-only.

Malformed input raises ``ExpositionError`` naming the line; no other exception escapes ``parse`` on any input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

Labels = Mapping[str, str]
Sample = tuple[str, Labels, float, int | None]  # name, labels, value, timestamp in ms (None: not given)

METRIC_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_EMPTY_LABELS: Labels = {}
# Bounds the caches: a node has a few label sets, but a pathological payload must not grow them forever.
_MAX_CACHED_LABEL_SETS = 8192
_MAX_CACHED_SERIES = 65536


class ExpositionError(ValueError):
    """The payload is not valid text exposition; ``line`` is 1-based (0 when no single line is at fault)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}" if line else problem)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Exposition:
    samples: list[Sample]
    types: dict[str, str] = field(default_factory=dict)  # metric family -> counter/gauge/...
    helps: dict[str, str] = field(default_factory=dict)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _unescape_help(text: str) -> str:
    """HELP text escapes only ``\\\\`` and ``\\n``; any other backslash stays as written."""
    out: list[str] = []
    pos = 0
    while (slash := text.find("\\", pos)) >= 0:
        out.append(text[pos:slash])
        nxt = text[slash + 1 : slash + 2]
        out.append({"\\": "\\", "n": "\n"}.get(nxt, "\\" + nxt))
        pos = slash + 2
    out.append(text[pos:])
    return "".join(out)


def _parse_float(token: str, lineno: int, what: str) -> float:
    # Python's float() also takes "1_000" and non-ASCII digits, which Prometheus (Go's ParseFloat) rejects.
    if "_" in token or not token.isascii():
        raise ExpositionError(lineno, f"{what} {_short(token)} is not a number")
    try:
        return float(token)
    except ValueError:
        raise ExpositionError(lineno, f"{what} {_short(token)} is not a number") from None


def _parse_timestamp(token: str, lineno: int) -> int:
    if "_" in token or not token.isascii():
        raise ExpositionError(lineno, f"timestamp {_short(token)} is not an integer")
    try:
        return int(token)
    except ValueError:
        raise ExpositionError(lineno, f"timestamp {_short(token)} is not an integer (milliseconds)") from None


def parse_labels(text: str, lineno: int) -> dict[str, str]:
    """Parse the inside of ``{...}``: ``name="value",...`` with ``\\\\``, ``\\"`` and ``\\n`` escapes."""
    labels: dict[str, str] = {}
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos >= end:
            return labels
        match = _LABEL_NAME.match(text, pos)
        if match is None:
            raise ExpositionError(lineno, f"invalid label name at {_short(text[pos:])}")
        name = match.group()
        pos = match.end()
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos >= end or text[pos] != "=":
            raise ExpositionError(lineno, f"expected '=' after label name {name!r}")
        pos += 1
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos >= end or text[pos] != '"':
            raise ExpositionError(lineno, f"label {name!r}: value must start with a double quote")
        pos += 1
        value_start = pos
        parts: list[str] = []
        while True:
            quote = text.find('"', pos)
            slash = text.find("\\", pos)
            if quote < 0:
                raise ExpositionError(lineno, f"label {name!r}: unterminated value")
            if 0 <= slash < quote:
                if slash + 1 >= end:
                    raise ExpositionError(lineno, f"label {name!r}: dangling backslash")
                escaped = _ESCAPES.get(text[slash + 1])
                if escaped is None:
                    raise ExpositionError(lineno, f"label {name!r}: invalid escape \\{text[slash + 1]}")
                parts.append(text[value_start:slash])
                parts.append(escaped)
                pos = value_start = slash + 2
                continue
            parts.append(text[value_start:quote])
            pos = quote + 1
            break
        if name in labels:
            raise ExpositionError(lineno, f"label {name!r} given twice")
        labels[name] = "".join(parts)
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos >= end:
            return labels
        if text[pos] != ",":
            raise ExpositionError(lineno, f"expected ',' or '}}' after label {name!r}, got {_short(text[pos:])}")
        pos += 1


class ExpositionParser:
    """Parses payloads, remembering label sets and metric names between calls (one instance per source)."""

    __slots__ = ("_comment_cache", "_label_cache", "_series_cache", "_valid_names")

    def __init__(self) -> None:
        self._label_cache: dict[str, Labels] = {}
        self._valid_names: set[str] = set()
        # HELP/TYPE lines repeat verbatim on every poll: remember what each one said (keyword, name, text).
        self._comment_cache: dict[str, tuple[str, str, str]] = {}
        # "name{labels}" -> (name, labels); one lookup per line once a node has been seen.
        self._series_cache: dict[str, tuple[str, Labels]] = {}

    def parse(self, text: str) -> Exposition:
        samples: list[Sample] = []
        types: dict[str, str] = {}
        helps: dict[str, str] = {}
        append = samples.append
        valid_names = self._valid_names
        comment_cache = self._comment_cache
        series_cache = self._series_cache
        lineno = 0
        try:
            # One flat loop on purpose: a method call per line would cost a fifth of the whole parse.
            for raw_line in text.split("\n"):
                lineno += 1
                line = raw_line
                if not line:
                    continue
                first = line[0]
                if first in " \t\r\f\v":
                    line = line.strip()
                    if not line:
                        continue
                    first = line[0]
                if first == "#":
                    comment = comment_cache.get(line)
                    if comment is None:
                        comment = self._comment(line, lineno)
                    keyword, name, text_ = comment
                    if keyword == "TYPE":
                        if name in types:
                            raise ExpositionError(lineno, f"second TYPE line for {name}")
                        types[name] = text_
                    elif keyword == "HELP":
                        helps[name] = text_
                    continue
                brace = line.find("{")
                if brace >= 0:
                    # Only numbers follow the label set: the last '}' closes it even if a value holds a '}'.
                    close = line.rfind("}")
                    if close < brace:
                        raise ExpositionError(lineno, "label set is not closed with '}'")
                    # One lookup of the whole "name{labels}" prefix: it repeats verbatim on every poll.
                    head = line[: close + 1]
                    known = series_cache.get(head)
                    if known is None:
                        known = self._series(line, brace, close, lineno)
                        if len(series_cache) >= _MAX_CACHED_SERIES:
                            series_cache.clear()
                        series_cache[head] = known
                    name, labels = known
                    rest = line[close + 1 :].split()
                else:
                    rest = line.split()
                    if not rest:
                        continue
                    name = rest.pop(0)
                    if name not in valid_names:
                        self._check_name(name, lineno)
                    labels = _EMPTY_LABELS
                count = len(rest)
                if count == 1:
                    token = rest[0]
                    # Python's float() also takes "1_000" and non-ASCII digits; Go's ParseFloat does not.
                    if "_" in token or not token.isascii():
                        raise ExpositionError(lineno, f"value {_short(token)} is not a number")
                    try:
                        value = float(token)
                    except ValueError:
                        raise ExpositionError(lineno, f"value {_short(token)} is not a number") from None
                    append((name, labels, value, None))
                elif count == 2:
                    value = _parse_float(rest[0], lineno, "value")
                    append((name, labels, value, _parse_timestamp(rest[1], lineno)))
                elif count == 0:
                    raise ExpositionError(lineno, f"{name}: missing value")
                else:
                    raise ExpositionError(lineno, f"{name}: unexpected text after the timestamp: {_short(rest[2])}")
        except ExpositionError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # A safety net: the contract is ExpositionError for any bad input, never a crash of the caller.
            raise ExpositionError(lineno, f"unparseable line ({type(exc).__name__}: {exc})") from None
        return Exposition(samples, types, helps)

    def _series(self, line: str, brace: int, close: int, lineno: int) -> tuple[str, Labels]:
        name = line[:brace].rstrip()
        if name not in self._valid_names:
            self._check_name(name, lineno)
        label_text = line[brace + 1 : close]
        labels = self._label_cache.get(label_text)
        if labels is None:
            labels = parse_labels(label_text, lineno)
            if len(self._label_cache) >= _MAX_CACHED_LABEL_SETS:
                self._label_cache.clear()
            # Shared by every metric of the same GPU: consumers resolve a label set once per payload.
            self._label_cache[label_text] = labels
        return name, labels

    def _check_name(self, name: str, lineno: int) -> None:
        if _METRIC_NAME.match(name) is None:
            raise ExpositionError(lineno, f"invalid metric name {_short(name)}")
        if len(self._valid_names) < _MAX_CACHED_LABEL_SETS:
            self._valid_names.add(name)

    def _comment(self, line: str, lineno: int) -> tuple[str, str, str]:
        """Validate a comment line once; returns ("HELP"|"TYPE"|"", metric name, help text or type)."""
        if line.startswith("# HELP "):
            keyword, rest = "HELP", line[7:]
        elif line.startswith("# TYPE "):
            keyword, rest = "TYPE", line[7:]
        else:
            parts = line[1:].split(None, 1)
            if not parts or parts[0] not in ("HELP", "TYPE"):
                return ("", "", "")  # an ordinary comment
            keyword, rest = parts[0], parts[1] if len(parts) > 1 else ""
        rest = rest.lstrip(" \t")
        space = rest.find(" ")
        name, text = (rest, "") if space < 0 else (rest[:space], rest[space + 1 :])
        name = name.rstrip()
        if not name:
            raise ExpositionError(lineno, f"{keyword} line without a metric name")
        if name not in self._valid_names:
            self._check_name(name, lineno)
        if keyword == "TYPE":
            text = text.strip()
            if text not in METRIC_TYPES:
                raise ExpositionError(lineno, f"unknown metric type {_short(text)} for {name}")
        elif "\\" in text:
            text = _unescape_help(text)
        result = (keyword, name, text)
        if len(self._comment_cache) >= _MAX_CACHED_LABEL_SETS:
            self._comment_cache.clear()
        self._comment_cache[line] = result
        return result


def parse_exposition(text: str) -> Exposition:
    """Parse one payload with a fresh cache (use an ``ExpositionParser`` to keep the cache between polls)."""
    return ExpositionParser().parse(text)


__all__ = [
    "Exposition",
    "ExpositionError",
    "ExpositionParser",
    "Labels",
    "Sample",
    "parse_exposition",
    "parse_labels",
]
