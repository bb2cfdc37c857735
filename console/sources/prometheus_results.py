"""The answers of a Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``) checked and unpacked: every
malformed part is a ``SourceError`` (bad payload) naming where it is, never a KeyError in the poller."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from console.samples.results import PollFailure, SourceError


def api_data(url: str, status: int, reason: str, body: bytes | bytearray) -> Any:
    """The ``data`` of one API answer; an HTTP status, a non-JSON body or ``status: error`` is a SourceError."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    error = ""
    if isinstance(document, dict) and document.get("status") == "error":
        error = f"{document.get('errorType', 'error')}: {document.get('error', '')}"
    if status in (401, 403):
        raise SourceError(PollFailure.AUTH_REFUSED, f"{url}: HTTP {status} {reason}".rstrip())
    if status != 200:
        failure = PollFailure.UNREACHABLE if status >= 500 or status == 404 else PollFailure.BAD_PAYLOAD
        detail = error or body[:200].decode("utf-8", "replace").strip()
        raise SourceError(failure, f"{url}: HTTP {status} {reason}: {detail}".rstrip(": "))
    if document is None:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{url}: the answer is not JSON (is this a Prometheus API?)")
    if error:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{url}: Prometheus said {error}")
    if not isinstance(document, dict) or document.get("status") != "success" or "data" not in document:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{url}: no 'status: success' with 'data' in the answer")
    return document["data"]


def result_of(data: Any, kind: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resultType") != kind or not isinstance(data.get("result"), list):
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: expected a {kind} result, got {got!r}")
    result: list[dict[str, Any]] = data["result"]
    return result


def _labels(item: Any, where: str, index: int, *, named: bool = True) -> dict[str, str]:
    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: result[{index}] has no 'metric' object")
    labels: dict[str, str] = item["metric"]
    if named and not isinstance(labels.get("__name__"), str):
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: result[{index}] has no metric name")
    return labels


def vector_rows(result: list[dict[str, Any]], where: str, *, named: bool = True) -> list[tuple[dict[str, str], float]]:
    """Each series' labels and value. A whole-site read has hundreds of thousands: they are taken as they come,
    and only an answer that does not have the expected shape is walked again to say where it is wrong."""
    try:
        rows = [(item["metric"], float(item["value"][1])) for item in result]
    except (KeyError, TypeError, IndexError, ValueError):
        rows = []
    else:
        if all(type(labels) is dict for labels, _value in rows) and (
            not named or all(type(labels.get("__name__")) is str for labels, _value in rows)
        ):
            return rows
    return list(_checked_vector_rows(result, where, named=named))


def _checked_vector_rows(
    result: list[dict[str, Any]], where: str, *, named: bool = True
) -> Iterable[tuple[dict[str, str], float]]:
    for i, item in enumerate(result):
        labels = _labels(item, where, i, named=named)
        value = item.get("value")
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
            raise SourceError(PollFailure.BAD_PAYLOAD, f'{where}: result[{i}].value is not [time, "number"]')
        yield labels, _check_number(value[1], where, i)


def matrix_rows(result: list[dict[str, Any]], where: str) -> Iterable[tuple[dict[str, str], list[tuple[float, float]]]]:
    for i, item in enumerate(result):
        labels = _labels(item, where, i)
        values = item.get("values")
        if not isinstance(values, list):
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: result[{i}].values is not a list")
        points = []
        for pair in values:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int | float)):
                raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: result[{i}].values has a bad point {pair!r}")
            points.append((round(float(pair[0]), 3), _check_number(pair[1], where, i)))
        yield labels, points


def _check_number(text: Any, where: str, index: int) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: result[{index}] value {text!r} is not a number") from None


__all__ = ["matrix_rows", "result_of", "vector_rows"]
