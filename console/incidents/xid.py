"""The Xid catalog: NVIDIA's Ampere+ catalog (mnemonic, description, resolution buckets) plus the console's own
severity and recommended-action table (resources/catalogs/xid.toml, reference.md sections 1.3 and 1.6).

NVIDIA's CSV has cells with newlines (e.g. Xid 13's mnemonic), so it is read with the csv module, never by lines.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import resources
from console.incidents.model import Severity

CATALOG_DIR = Path(resources.__file__).resolve().parent / "catalogs"
NVIDIA_CATALOG_PATH = CATALOG_DIR / "xid_catalog_nvidia.csv"
CONSOLE_TABLE_PATH = CATALOG_DIR / "xid.toml"

UNKNOWN_ACTION = "Unknown Xid: record the raw kernel message and check NVIDIA's Xid catalog."
_NONFATAL = re.compile(r"\bnon[- ]?fatal\b", re.IGNORECASE)
_FATAL = re.compile(r"\bfatal\b", re.IGNORECASE)


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the row or code, and the column or key."""


@dataclass(frozen=True, slots=True)
class XidEntry:
    code: int
    mnemonic: str
    description: str
    immediate_bucket: str
    investigatory_bucket: str
    severity: Severity
    action: str
    unused: bool = False  # NVIDIA marks the code unused on Ampere and newer
    fatal_severity: Severity | None = None  # NVLink5 (144-150): the line says Fatal or Nonfatal
    nonfatal_severity: Severity | None = None
    annotates_previous: bool = False  # 45 and 154 describe the Xid before them

    def severity_for(self, message: str) -> Severity:
        if self.nonfatal_severity is not None and _NONFATAL.search(message):
            return self.nonfatal_severity
        if self.fatal_severity is not None and _FATAL.search(message):
            return self.fatal_severity
        return self.severity


@dataclass(frozen=True, slots=True)
class XidCatalog:
    entries: Mapping[int, XidEntry]
    unknown_severity: Severity = Severity.WARNING
    unknown_action: str = UNKNOWN_ACTION

    def get(self, code: int) -> XidEntry | None:
        return self.entries.get(code)


def _severity(path: Path, where: str, value: object) -> Severity:
    try:
        return Severity.parse(str(value))
    except ValueError as exc:
        raise CatalogError(f"{path}: {where}: {exc}") from None


def _bucket_severity(bucket: str, table: Mapping[str, Severity], default: Severity) -> Severity:
    return table.get(bucket.strip(), default)


def load_xid_catalog(nvidia_csv: Path = NVIDIA_CATALOG_PATH, console_table: Path = CONSOLE_TABLE_PATH) -> XidCatalog:
    """Join NVIDIA's catalog with the console's table; codes in the table but not the CSV are allowed."""
    try:
        with console_table.open("rb") as handle:
            table = tomllib.load(handle)
    except OSError as exc:
        raise CatalogError(f"{console_table}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{console_table}: not valid TOML: {exc}") from None
    bucket_actions = {str(k): str(v) for k, v in table.get("bucket_actions", {}).items()}
    bucket_severity = {
        str(k): _severity(console_table, f"bucket_severity.{k}", v) for k, v in table.get("bucket_severity", {}).items()
    }
    default_severity = _severity(console_table, "default_severity", table.get("default_severity", "warning"))
    unknown = table.get("unknown", {})
    annotating = {int(c) for c in table.get("annotates_previous", [])}
    overrides: dict[int, dict[str, object]] = {}
    for code_text, spec in table.get("xid", {}).items():
        if not code_text.isdigit() or not isinstance(spec, dict):
            raise CatalogError(f"{console_table}: xid.{code_text}: expected [xid.N] tables with a numeric N")
        unknown_keys = set(spec) - {"severity", "action", "fatal_severity", "nonfatal_severity"}
        if unknown_keys:
            raise CatalogError(f"{console_table}: xid.{code_text}: unknown keys {sorted(unknown_keys)}")
        overrides[int(code_text)] = spec

    rows: dict[int, tuple[str, str, str, str]] = {}
    try:
        with nvidia_csv.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            needed = {"code", "mnemonic", "description", "immediate_resolution_bucket"}
            missing = needed - set(reader.fieldnames or ())
            if missing:
                raise CatalogError(f"{nvidia_csv}: header: missing columns {sorted(missing)}")
            for row in reader:
                line = reader.line_num
                code_text = (row.get("code") or "").strip()
                if not code_text.isdigit():
                    raise CatalogError(f"{nvidia_csv}: line {line}: code: expected a number, got {code_text!r}")
                rows[int(code_text)] = (
                    " ".join((row.get("mnemonic") or "").split()),
                    " ".join((row.get("description") or "").split()),
                    (row.get("immediate_resolution_bucket") or "").strip(),
                    " ".join((row.get("investigatory_resolution_bucket") or "").split()),
                )
    except OSError as exc:
        raise CatalogError(f"{nvidia_csv}: cannot read: {exc.strerror or exc}") from None

    entries: dict[int, XidEntry] = {}
    for code in sorted(set(rows) | set(overrides)):
        mnemonic, description, immediate, investigatory = rows.get(code, ("", "", "", ""))
        spec = overrides.get(code, {})
        unused = description.lower() == "unused"
        if "severity" in spec:
            severity = _severity(console_table, f"xid.{code}.severity", spec["severity"])
        elif unused:
            severity = default_severity
        else:
            severity = _bucket_severity(immediate, bucket_severity, default_severity)
        action = str(spec.get("action") or bucket_actions.get(immediate) or "")
        if not action and immediate:
            action = f"NVIDIA resolution bucket {immediate}"
        entries[code] = XidEntry(
            code=code,
            mnemonic=mnemonic,
            description=description,
            immediate_bucket=immediate,
            investigatory_bucket=investigatory,
            severity=severity,
            action=action,
            unused=unused,
            fatal_severity=_severity(console_table, f"xid.{code}.fatal_severity", spec["fatal_severity"])
            if "fatal_severity" in spec
            else None,
            nonfatal_severity=_severity(console_table, f"xid.{code}.nonfatal_severity", spec["nonfatal_severity"])
            if "nonfatal_severity" in spec
            else None,
            annotates_previous=code in annotating,
        )
    return XidCatalog(
        entries=entries,
        unknown_severity=_severity(console_table, "unknown.severity", unknown.get("severity", "warning")),
        unknown_action=str(unknown.get("action", UNKNOWN_ACTION)),
    )
