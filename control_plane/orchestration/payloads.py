"""How the workflows' payloads become dataclasses again, at the cost of their fields.

Temporal's JSON converter resolves a dataclass's type hints (`typing.get_type_hints`, every
annotation a string here) for every value it decodes: 41 µs per element of a
`start_attempts` answer outside the workflow sandbox, and many times that inside it, where
`typing` is reached through the sandbox's proxies. A wide fan-out decoded thousands of them
(30% of the control plane's samples at 1,500 tasks; bench/README.md). This converter
resolves each class's hints once per converter (the sandbox makes one per workflow run) and
otherwise converts exactly as Temporal's does: the JSON on the wire, and so every history,
is unchanged.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, NamedTuple

from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
)
from temporalio.converter import value_to_type as _value_to_type

_PLAIN = frozenset({str, bool, int})  # hints whose JSON value of that very type is the value


class _Fields(NamedTuple):
    """A dataclass's fields as decoding needs them, resolved once."""

    hints: dict[str, Any]  # field -> resolved hint
    optional: frozenset[str]  # the fields whose hint admits None


def _accepts_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint) and typing.get_origin(hint) in (
        typing.Union,
        types.UnionType,
    )


def _fields_of(cls: type) -> _Fields | None:
    """None for what is left to Temporal's conversion: not a dataclass, or one with a field
    set after construction."""
    if not dataclasses.is_dataclass(cls) or not all(f.init for f in dataclasses.fields(cls)):
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _Fields(fields, frozenset(name for name, hint in fields.items() if _accepts_none(hint)))


class DataclassValues(JSONTypeConverter):
    """Decodes a dict into a dataclass with the hints of its fields resolved once.

    Like Temporal's own conversion: unknown keys are ignored, a missing required field fails
    in the constructor, and each field's value is converted by its hint (with this converter
    for nested dataclasses)."""

    def __init__(self) -> None:
        self._classes: dict[type, _Fields | None] = {}

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if type(hint) is not type or not isinstance(value, dict):
            return JSONTypeConverter.Unhandled
        if hint in self._classes:
            fields = self._classes[hint]
        else:
            fields = self._classes[hint] = _fields_of(hint)
        if fields is None:
            return JSONTypeConverter.Unhandled
        converters = [self]
        values = {}
        for name, field_hint in fields.hints.items():
            if name not in value:
                continue
            item = value[name]
            if (type(item) is field_hint and field_hint in _PLAIN) or (
                item is None and name in fields.optional
            ):
                values[name] = item  # what Temporal's conversion returns as it is
            else:
                try:
                    values[name] = _value_to_type(field_hint, item, converters)
                except Exception as err:
                    raise TypeError(f"Failed converting field {name} on dataclass {hint}") from err
        return hint(**values)


class FleetflowPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, the JSON one with `DataclassValues`."""

    def __init__(self) -> None:
        super().__init__(
            *(
                JSONPlainPayloadConverter(custom_type_converters=[DataclassValues()])
                if isinstance(converter, JSONPlainPayloadConverter)
                else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=FleetflowPayloadConverter)
"""What every client of the control plane's workflows uses."""
