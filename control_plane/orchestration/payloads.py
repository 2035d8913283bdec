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
from typing import Any

from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
)
from temporalio.converter import value_to_type as _value_to_type

_NOT_A_DATACLASS: dict[str, Any] = {}
_PLAIN = frozenset({str, bool, int})  # hints whose JSON value of that very type is the value


def _accepts_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint) and typing.get_origin(hint) in (
        typing.Union,
        types.UnionType,
    )


class DataclassValues(JSONTypeConverter):
    """Decodes a dict into a dataclass with the hints of its fields resolved once.

    Like Temporal's own conversion: unknown keys are ignored, a missing required field fails
    in the constructor, and each field's value is converted by its hint (with this converter
    for nested dataclasses)."""

    def __init__(self) -> None:
        self._fields: dict[type, dict[str, Any]] = {}  # class -> field -> resolved hint
        self._optional: dict[type, frozenset[str]] = {}  # class -> fields that may be None

    def _fields_of(self, hint: type) -> dict[str, Any]:
        fields = self._fields.get(hint)
        if fields is None:
            # One with a field set after construction is left to Temporal's conversion.
            if dataclasses.is_dataclass(hint) and all(f.init for f in dataclasses.fields(hint)):
                hints = typing.get_type_hints(hint)
                fields = {f.name: hints[f.name] for f in dataclasses.fields(hint)}
                self._optional[hint] = frozenset(
                    name for name, field_hint in fields.items() if _accepts_none(field_hint)
                )
            else:
                fields = _NOT_A_DATACLASS
            self._fields[hint] = fields
        return fields

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if type(hint) is not type or not isinstance(value, dict):
            return JSONTypeConverter.Unhandled
        fields = self._fields_of(hint)
        if fields is _NOT_A_DATACLASS:
            return JSONTypeConverter.Unhandled
        optional = self._optional[hint]
        converters = [self]
        values = {}
        for name, field_hint in fields.items():
            if name not in value:
                continue
            item = value[name]
            if (type(item) is field_hint and field_hint in _PLAIN) or (
                item is None and name in optional
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
