"""Evidence: the samples around an incident, bounded in memory and in points per incident.

Per node the engine keeps recent samples as compact tuples (see ``_Kept``), at full rate (at most one per
``min_spacing_s``) for the newest ``full_rate_s`` and one per ``older_every_s`` back to ``before_s``. When an
incident opens, those samples become its "before" evidence, filtered to the affected GPU plus the chassis; the
engine then keeps recording with the same thinning for ``after_s``.

Evidence text is the sample's schema JSON (``evidence_json``). While incidents record, ``SampleJson`` encodes each
GPU, the chassis and each event of a sample at most once and composes every incident's text from those pieces, so
several incidents on one node (or one GPU) pay for one encoding.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import pickle
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from console.incidents.model import EvidencePoint, Incident
from console.incidents.rules import EvidenceSettings
from console.samples.codec import (
    SCHEMA_ID,
    chassis_to_json,
    event_to_json,
    gpu_to_json,
    mig_to_json,
    sample_to_json,
    workload_to_json,
)
from console.samples.schema import EMPTY_CHASSIS, ChassisSample, GpuEvent, GpuSample, NodeSample

# The encoder json.dumps(obj, separators=(",", ":")) builds on every call, built once. Circular checks are off:
# samples are trees of tuples and dataclass-derived dicts.
_encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def evidence_json(sample: NodeSample, gpu_uuid: str | None) -> str:
    """The sample as schema JSON, reduced to one GPU (and its events) plus the chassis for GPU incidents.

    The reference form: ``SampleJson`` composes the same text, byte for byte, from pieces it encodes once."""
    if gpu_uuid is not None:
        sample = dataclasses.replace(
            sample,
            gpus=tuple(g for g in sample.gpus if g.uuid == gpu_uuid),
            events=tuple(e for e in sample.events if e.gpu_uuid in (gpu_uuid, None)),
        )
    return json.dumps(sample_to_json(sample), separators=(",", ":"))


_GPU_FIELDS = dataclasses.fields(GpuSample)
_CHASSIS_FIELDS = dataclasses.fields(ChassisSample)
# Field types (as annotated) whose values are numbers, bools or None: the C encoder and pickle take them in one call.
_NUMBER_TYPES = frozenset({"float | None", "int | None", "bool | None", "float", "int", "bool"})
_REASON_TEXT: dict[tuple[str, ...], tuple[str, ...]] = {}


def _reason_text(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """Throttle reasons as plain strings (StrEnum members hash and compare as their values: one entry per set)."""
    text = _REASON_TEXT.get(reasons)
    if text is None:
        text = _REASON_TEXT[reasons] = tuple([r.value if isinstance(r, StrEnum) else r for r in reasons])
    return text


# --- encoding pieces -----------------------------------------------------------------------------------------
# ``gpu_to_json`` + ``json.dumps`` cost ~20 us per GPU, most of it a Python call per field and the encoding of
# 45 key strings. ``_FieldsJson`` writes the same text from a template holding the keys: all number, bool and
# None fields go through the C encoder in one call, and strings (names, UUIDs, throttle reasons) repeat from
# sample to sample, so their JSON is remembered. Any value the schema does not declare takes the reference path.


class _Unexpected(Exception):
    """A value of a type its field does not declare: encode this record the reference way."""


_PIECES: dict[object, str] = {}  # the JSON of recurring strings and tuples of strings
_MAX_PIECES = 100_000  # a fleet's worth of UUIDs, serials and names; a source churning strings resets it


def _remember(key: object, text: str) -> str:
    if len(_PIECES) >= _MAX_PIECES:
        _PIECES.clear()
    _PIECES[key] = text
    return text


def _string_piece(value: object) -> str:
    """A str or StrEnum field (the reference form writes ``str(value)``)."""
    if value is None:
        return "null"
    if not isinstance(value, str):
        raise _Unexpected
    text = _PIECES.get(value)  # a StrEnum member hashes and compares as its text: they share one entry
    return text if text is not None else _remember(value, _encode(str(value)))


def _strings_piece(value: object) -> str:
    """A tuple of strings or StrEnums (the reference form writes a list of them, as text)."""
    if type(value) is not tuple:
        raise _Unexpected
    text = _PIECES.get(value)
    if text is None:
        if not all(isinstance(item, str) for item in value):
            raise _Unexpected
        text = _remember(value, _encode([str(item) for item in value]))
    return text


def _numbers_piece(value: object) -> str:
    """A tuple of numbers or None (fan speeds: the reference form keeps them as they are, NaN included)."""
    if value is None:
        return "null"
    if type(value) is not tuple:
        raise _Unexpected
    return _encode(value)


def _mig_piece(value: object) -> str:
    """A GPU's MIG instances (empty on almost every GPU)."""
    if value == ():
        return "[]"
    if type(value) is not tuple:
        raise _Unexpected
    return _encode([mig_to_json(instance) for instance in value])


def _empty_piece(value: object) -> str:
    """Nested records (a BMC's named components and chassis parts): empty on nearly every sample; when not, the
    record takes the reference path."""
    if value != ():
        raise _Unexpected
    return "[]"


def _workload_piece(value: object) -> str:
    """What runs on the GPU: null, or a list of entries (the same list repeats from poll to poll)."""
    if value is None:
        return "null"
    if type(value) is not tuple:
        raise _Unexpected
    key = ("workload", value)
    text = _PIECES.get(key)
    return text if text is not None else _remember(key, _encode(workload_to_json(value)))


_PIECE_FOR_TYPE: dict[str, Callable[[object], str]] = {
    "str": _string_piece,
    "str | None": _string_piece,
    "RecoveryAction | None": _string_piece,
    "Health | None": _string_piece,
    "tuple[str, ...]": _strings_piece,
    "tuple[ThrottleReason, ...]": _strings_piece,
    "tuple[float, ...] | None": _numbers_piece,
    "tuple[MigInstance, ...]": _mig_piece,
    "tuple[ComponentCondition, ...]": _empty_piece,
    "tuple[ChassisPart, ...]": _empty_piece,
    "tuple[Workload, ...] | None": _workload_piece,
}


class _FieldsJson:
    """The compact JSON text of ``reference(record)`` for one schema dataclass, byte for byte."""

    def __init__(self, cls: type, reference: Callable[[Any], dict[str, Any]]) -> None:
        fields = dataclasses.fields(cls)
        scalar = [i for i, f in enumerate(fields) if f.type in _NUMBER_TYPES]
        other = [i for i in range(len(fields)) if i not in scalar]
        unknown = [fields[i].type for i in other if fields[i].type not in _PIECE_FOR_TYPE]
        if unknown or len(scalar) < 2:
            raise TypeError(f"{cls.__name__}: no JSON piece for field types {unknown}")  # the schema grew a type
        self._values = operator.attrgetter(*(f.name for f in fields))
        self._scalars = operator.itemgetter(*scalar)
        self._count = len(scalar)
        self._others = [(i, _PIECE_FOR_TYPE[str(fields[i].type)]) for i in other]
        order = scalar + other  # the pieces as computed, put back in field order for the template
        self._in_field_order = operator.itemgetter(*(order.index(i) for i in range(len(fields))))
        self._template = "{" + ",".join(f"{_encode(f.name)}:%s" for f in fields) + "}"
        self._reference = reference

    def __call__(self, record: object) -> str:
        values = self._values(record)
        scalars = _encode(self._scalars(values))
        # NaN and Infinity become null in the reference form; a comma inside one value (a string where a number
        # belongs) would misalign the split. Both are rare: take the reference path.
        pieces = scalars[1:-1].split(",")
        if "N" in scalars or "I" in scalars or len(pieces) != self._count:
            return _encode(self._reference(record))
        try:
            for i, piece in self._others:
                pieces.append(piece(values[i]))
        except _Unexpected:
            return _encode(self._reference(record))
        return self._template % self._in_field_order(pieces)


gpu_json = _FieldsJson(GpuSample, gpu_to_json)
chassis_json = _FieldsJson(ChassisSample, chassis_to_json)
_EMPTY_CHASSIS_JSON = chassis_json(EMPTY_CHASSIS)


class SampleJson:
    """One sample's evidence texts (``evidence_json`` for any GPU), each piece encoded at most once."""

    __slots__ = ("_events", "_gpus", "_head", "_middle", "sample")

    def __init__(self, sample: NodeSample) -> None:
        self.sample = sample
        self._head = ""
        self._middle = ""
        self._gpus: list[str | None] = []
        self._events: list[str | None] = []

    def text(self, gpu_uuid: str | None) -> str:
        sample = self.sample
        if not self._head:
            head: dict[str, object] = {"schema": SCHEMA_ID, "node": sample.node, "site": sample.site}
            head["source"], head["time"] = sample.source, sample.time
            self._head = _encode(head)[:-1] + ',"gpus":['  # the same object, left open for its remaining keys
            chassis = sample.chassis
            chassis_text = _EMPTY_CHASSIS_JSON if chassis is EMPTY_CHASSIS else chassis_json(chassis)
            self._middle = '],"chassis":' + chassis_text + ',"events":['
            self._gpus = [None] * len(sample.gpus)
            self._events = [None] * len(sample.events)
        gpus = [self._gpu(i) for i, gpu in enumerate(sample.gpus) if gpu_uuid is None or gpu.uuid == gpu_uuid]
        events = (
            [
                self._event(i)
                for i, event in enumerate(sample.events)
                if gpu_uuid is None or event.gpu_uuid in (gpu_uuid, None)
            ]
            if sample.events
            else ()
        )
        return f"{self._head}{','.join(gpus)}{self._middle}{','.join(events)}]}}"

    def _gpu(self, i: int) -> str:
        text = self._gpus[i]
        if text is None:
            text = self._gpus[i] = gpu_json(self.sample.gpus[i])
        return text

    def _event(self, i: int) -> str:
        text = self._events[i]
        if text is None:
            text = self._events[i] = _encode(event_to_json(self.sample.events[i]))
        return text


# --- the per-node buffer ------------------------------------------------------------------------------------------
# A kept sample is a tuple of atoms (bytes, str, float, tuples of those): CPython's collector stops tracking it, so
# five minutes of samples for 1,000 nodes add nothing to garbage-collection pauses (they did, 0.8 s full
# collections, when the buffer held the samples' dataclass objects). It is also compact, ~1.6 KiB for 8 GPUs where
# a tuple of Python values per GPU took ~6 KiB:
# - the numbers (int, float, bool or None fields) of all GPUs and of the chassis are one pickle: a float is its 8
#   IEEE bytes (it comes back bit for bit, -0.0 and NaN included), a small int 1 byte, a bool or None 1 byte; every
#   value comes back with its own type and value, whatever it is (an int where a float is declared, an int beyond 64
#   bits). Pickling them is one C call (~3 us per sample); only bytes this buffer made are ever unpickled.
# - the other fields of a GPU (strings, enums as their text, tuples of strings) and of the chassis repeat from
#   sample to sample: each GPU's are one shared tuple, the previous sample's where equal (a comparison costs less
#   than hashing fresh strings), else one from a table of those seen. Equal means the same value and type for what
#   the schema allows there (str, None, tuples of str).

_ENUM_NAMES = frozenset({"throttle_reasons", "recovery_action", "health", "pump_health", "psu_health"})
_GPU_NUMBER_NAMES = tuple(f.name for f in _GPU_FIELDS if f.type in _NUMBER_TYPES)
_GPU_WORD_NAMES = tuple(f.name for f in _GPU_FIELDS if f.type not in _NUMBER_TYPES and f.name not in _ENUM_NAMES)
_CHASSIS_NUMBER_NAMES = tuple(f.name for f in _CHASSIS_FIELDS if f.type in _NUMBER_TYPES)
_CHASSIS_HEALTH_NAMES = ("health", "pump_health", "psu_health")
_CHASSIS_WORD_NAMES = tuple(
    f.name for f in _CHASSIS_FIELDS if f.type not in _NUMBER_TYPES and f.name not in {"fans_rpm", *_ENUM_NAMES}
)
# The kept order of a GPU: its numbers, its other plain fields, its throttle reason texts, its recovery action
# text; of a chassis: its numbers, its fans, its health texts, its other plain fields.
_GPU_KEPT_NAMES = (*_GPU_NUMBER_NAMES, *_GPU_WORD_NAMES, "throttle_reasons", "recovery_action")
_CHASSIS_KEPT_NAMES = (*_CHASSIS_NUMBER_NAMES, "fans_rpm", *_CHASSIS_HEALTH_NAMES, *_CHASSIS_WORD_NAMES)
if sorted(_GPU_KEPT_NAMES) != sorted(f.name for f in _GPU_FIELDS) or sorted(_CHASSIS_KEPT_NAMES) != sorted(
    f.name for f in _CHASSIS_FIELDS
):
    raise TypeError("evidence: the schema grew a field of a kind the sample buffer does not keep")


def _values(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """``attrgetter`` that returns a tuple for one name too."""
    if len(names) == 1:
        name = names[0]
        return lambda record: (getattr(record, name),)
    return operator.attrgetter(*names)


_gpu_numbers = _values(_GPU_NUMBER_NAMES)
_gpu_words = _values(_GPU_WORD_NAMES)
_chassis_numbers = _values(_CHASSIS_NUMBER_NAMES)
_chassis_health = _values(_CHASSIS_HEALTH_NAMES)
_chassis_words = _values(_CHASSIS_WORD_NAMES)
# Kept order -> field order, to build the dataclass again.
_gpu_in_field_order = operator.itemgetter(*(_GPU_KEPT_NAMES.index(f.name) for f in _GPU_FIELDS))
_chassis_in_field_order = operator.itemgetter(*(_CHASSIS_KEPT_NAMES.index(f.name) for f in _CHASSIS_FIELDS))
_UUID_AT = _GPU_WORD_NAMES.index("uuid")

_Words = tuple[object, ...]  # a GPU's or the chassis' other values, in kept order
# (time, GPUs' numbers, chassis numbers, fans): pickled, or as they are if pickle refuses one of them
_Numbers = tuple[object, tuple[tuple[object, ...], ...], tuple[object, ...], object]
# (t, source, numbers, (GPU words..., chassis words), events)
_Kept = tuple[float, str, bytes | _Numbers, tuple[_Words, ...], tuple[GpuEvent, ...]]


_WORDS: dict[_Words, _Words] = {}  # words tuples seen, shared by every node's buffer
_MAX_WORDS = 100_000  # a large fleet's GPUs a few times over; a source churning strings resets it


def _interned(words: _Words) -> _Words:
    try:
        kept = _WORDS.get(words)
    except TypeError:  # an unhashable value where a string belongs: kept as it is
        return words
    if kept is None:
        if len(_WORDS) >= _MAX_WORDS:
            _WORDS.clear()
        kept = _WORDS[words] = words
    return kept


def _pickled(numbers: _Numbers) -> bytes | _Numbers:
    try:
        return pickle.dumps(numbers, pickle.HIGHEST_PROTOCOL)
    except Exception:  # a value pickle refuses where a number belongs (a lambda?): kept as it is
        return numbers


class SampleBuffer:
    """One node's recent samples, thinned with age so memory per node stays bounded."""

    __slots__ = ("_chassis", "_chassis_kept", "_older", "_recent", "_words", "settings")

    def __init__(self, settings: EvidenceSettings) -> None:
        self.settings = settings
        self._recent: deque[_Kept] = deque()
        self._older: deque[_Kept] = deque()
        self._chassis: ChassisSample | None = None  # the last chassis object seen, often shared between samples
        self._chassis_kept: tuple[tuple[object, ...], object, _Words] = ((), None, ())
        self._words: tuple[_Words, ...] = ()  # the last sample's words, shared with the next where they are equal

    def add(self, t: float, sample: NodeSample) -> None:
        s = self.settings
        recent = self._recent
        if recent and t - recent[-1][0] < s.min_spacing_s:
            return
        reason_text = _REASON_TEXT.get
        numbers, words = _gpu_numbers, _gpu_words
        last_words = self._words
        last_count = len(last_words) - 1  # the last entry is the chassis'
        gpu_numbers = []
        kept_words = []
        for i, gpu in enumerate(sample.gpus):
            gpu_numbers.append(numbers(gpu))
            reasons = gpu.throttle_reasons
            text = reason_text(reasons)
            if text is None:
                text = _reason_text(reasons)
            action = gpu.recovery_action
            # .value: the enum's own text object, where str() would copy it for every GPU.
            gpu_words = words(gpu) + (text, None if action is None else action.value)  # noqa: RUF005 (faster)
            # The same GPU's last words (the usual case, found without hashing fresh strings), else a tuple seen
            # before with these words (throttle reasons come and go).
            same = i < last_count and gpu_words == last_words[i]
            kept_words.append(last_words[i] if same else _interned(gpu_words))
        chassis = sample.chassis
        if chassis is not self._chassis:
            self._chassis, self._chassis_kept = chassis, self._keep_chassis(chassis, self._chassis_kept[2])
        chassis_numbers, fans, chassis_words = self._chassis_kept
        kept_words.append(chassis_words)
        all_words = tuple(kept_words)
        if all_words == last_words:  # element by element, each the very same object: quick
            all_words = last_words
        self._words = all_words
        packed = _pickled((sample.time, tuple(gpu_numbers), chassis_numbers, fans))
        recent.append((t, sample.source, packed, all_words, sample.events))
        cutoff = t - s.full_rate_s
        older = self._older
        while recent and recent[0][0] < cutoff:
            moved = recent.popleft()
            if not older or moved[0] - older[-1][0] >= s.older_every_s:
                older.append(moved)
        oldest = t - s.before_s
        while older and older[0][0] < oldest:
            older.popleft()

    @staticmethod
    def _keep_chassis(chassis: ChassisSample, last_words: _Words) -> tuple[tuple[object, ...], object, _Words]:
        health = tuple([None if h is None else h.value for h in _chassis_health(chassis)])  # type: ignore[attr-defined]
        words = health + _chassis_words(chassis)
        return _chassis_numbers(chassis), chassis.fans_rpm, last_words if words == last_words else _interned(words)

    def samples(self, node: str, site: str) -> list[tuple[float, NodeSample]]:
        return [(kept[0], self._restore(node, site, kept, None)) for kept in (*self._older, *self._recent)]

    def evidence(self, node: str, site: str, gpu_uuid: str | None) -> list[tuple[float, str]]:
        """``evidence_json`` of every kept sample, restoring only the GPU it names."""
        return [
            (kept[0], SampleJson(self._restore(node, site, kept, gpu_uuid)).text(gpu_uuid))
            for kept in (*self._older, *self._recent)
        ]

    @staticmethod
    def _restore(node: str, site: str, kept: _Kept, gpu_uuid: str | None) -> NodeSample:
        """The sample again, its enums as their text (they compare and encode as the members do)."""
        _, source, packed, words, events = kept
        numbers: _Numbers = pickle.loads(packed) if isinstance(packed, bytes) else packed
        time, gpu_numbers, chassis_numbers, fans = numbers
        return NodeSample(
            node=node,
            site=site,
            source=source,
            time=time,  # type: ignore[arg-type]
            gpus=tuple(
                GpuSample(*_gpu_in_field_order(gpu + gpu_words))
                for gpu, gpu_words in zip(gpu_numbers, words, strict=False)  # words end with the chassis'
                if gpu_uuid is None or gpu_words[_UUID_AT] == gpu_uuid
            ),
            chassis=ChassisSample(*_chassis_in_field_order((*chassis_numbers, fans, *words[-1]))),
            events=events,
        )

    def __len__(self) -> int:
        return len(self._older) + len(self._recent)


@dataclass(slots=True)
class Recording:
    """Evidence still being recorded after an incident opened; points leave in batches (EVIDENCE changes)."""

    incident: Incident
    gpu_uuid: str | None
    started: float
    until: float
    last_point_t: float
    batch: list[EvidencePoint] = field(default_factory=list)
    batch_started: float = 0.0

    def offer(self, t: float, sample: SampleJson, settings: EvidenceSettings) -> None:
        """Record ``sample`` if the thinning wants a point at ``t``; its texts are shared with other recordings."""
        spacing = settings.min_spacing_s if t - self.started <= settings.full_rate_s else settings.older_every_s
        if t - self.last_point_t < spacing or t > self.until:
            return
        if not self.batch:
            self.batch_started = t
        self.batch.append(EvidencePoint(self.incident.id, t, sample.text(self.gpu_uuid)))
        self.last_point_t = t

    def due(self, now: float, settings: EvidenceSettings) -> bool:
        return bool(self.batch) and (now - self.batch_started >= settings.batch_s or now >= self.until)

    def take(self) -> tuple[EvidencePoint, ...]:
        points, self.batch = tuple(self.batch), []
        return points
