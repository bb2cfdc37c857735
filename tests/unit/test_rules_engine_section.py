"""The rules file's [engine] table is checked like [evidence]: a bad value is a named problem, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.incidents.rules import RuleError, load_rules

_RULE = '[[rules]]\nid = "r"\nkind = "unreachable"\ncategory = "node"\ntitle = "t"\n'


def test_engine_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[engine]\nupdate_every_s = 3\n" + _RULE)
    assert load_rules(path).update_every_s == 3.0
    path.write_text(_RULE)
    assert load_rules(path).update_every_s == 10.0


def test_a_bad_engine_value_is_reported_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[engine]\nupdate_every_s = "soon"\n' + _RULE)
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    assert caught.value.problems == (f"{path}: engine.update_every_s: expected a number, got str",)
