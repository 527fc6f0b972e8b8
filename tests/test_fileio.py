"""``dpa3_al.common.fileio.known_fields``: how the file contracts' readers (MD and label
status.json, state.json) turn a JSON object into their dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dpa3_al.common.fileio import known_fields


@dataclass
class _Record:
    name: str
    step: int | None = None


def test_keys_of_another_version_are_dropped() -> None:
    data = {"name": "a", "step": 3, "added_later": True}
    assert _Record(**known_fields(_Record, data)) == _Record("a", 3)
    assert data == {"name": "a", "step": 3, "added_later": True}      # the input is not changed


@pytest.mark.parametrize("data, kind", [([1, 2], "list"), ("x", "str"), (None, "NoneType")])
def test_not_an_object_is_a_value_error_naming_what_it_is(data, kind) -> None:
    with pytest.raises(ValueError, match=f"a JSON {kind}, not an object"):
        known_fields(_Record, data)
