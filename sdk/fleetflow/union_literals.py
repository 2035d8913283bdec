"""Union literals: which variant of a union (`ir.TypeKind.UNION`) a JSON literal is.

A union literal is tagged, `{"variant": <the variant's describe()>, "value": <literal>}`, or a
plain literal of one variant, recognised by its JSON shape (`json_shape`) when exactly one
variant could have produced it.
"""

from __future__ import annotations

from typing import Any

from fleetflow.ir import LiteralType, TypeKind

UNION_KEYS = frozenset({"variant", "value"})

# The JSON shape of a literal: "null", "bool", "int", "float", "string", "array", or the set of
# an object's keys (a struct's fields, a file's `uri` and `name`...).
Shape = str | frozenset[str]
_ANY_OBJECT: Shape = "object"  # an object whose keys are not known (a dict's)


def json_shape(literal: Any) -> Shape:
    """The shape of a JSON value, what a plain (untagged) union literal is recognised by."""
    if literal is None:
        return "null"
    if isinstance(literal, bool):
        return "bool"
    if isinstance(literal, int):
        return "int"
    if isinstance(literal, float):
        return "float"
    if isinstance(literal, str):
        return "string"
    if isinstance(literal, list):
        return "array"
    if isinstance(literal, dict):
        return frozenset(str(key) for key in literal)
    return "unknown"


def _accepts_shape(literal_type: LiteralType, shape: Shape) -> bool:
    match literal_type.kind:
        case TypeKind.INTEGER:
            return shape == "int"
        case TypeKind.FLOAT | TypeKind.DURATION:
            return shape in ("int", "float")
        case TypeKind.BOOLEAN:
            return shape == "bool"
        case TypeKind.STRING | TypeKind.BYTES | TypeKind.DATETIME | TypeKind.ENUM:
            return shape == "string"
        case TypeKind.LIST | TypeKind.SET:
            return shape == "array"
        case TypeKind.OPTIONAL:
            assert literal_type.item is not None
            return shape == "null" or _accepts_shape(literal_type.item, shape)
        case TypeKind.DICT:
            return isinstance(shape, frozenset) or shape == _ANY_OBJECT
        case TypeKind.STRUCT:
            return shape == frozenset(literal_type.fields or {})
        case TypeKind.FILE | TypeKind.NDARRAY | TypeKind.DATAFRAME:
            return shape == frozenset({"uri", "name"})
        case TypeKind.DIRECTORY:
            return shape == frozenset({"uri"})
        case TypeKind.UNION:
            return shape == UNION_KEYS
    return False  # pragma: no cover


def produced_shapes(literal_type: LiteralType) -> list[Shape]:
    """Every shape a literal of `literal_type` may have (a dict's keys are not known)."""
    match literal_type.kind:
        case TypeKind.INTEGER:
            return ["int"]
        case TypeKind.FLOAT:
            return ["float"]
        case TypeKind.DURATION:
            return ["int", "float"]  # whole seconds are an int
        case TypeKind.BOOLEAN:
            return ["bool"]
        case TypeKind.STRING | TypeKind.BYTES | TypeKind.DATETIME | TypeKind.ENUM:
            return ["string"]
        case TypeKind.LIST | TypeKind.SET:
            return ["array"]
        case TypeKind.OPTIONAL:
            assert literal_type.item is not None
            return ["null", *produced_shapes(literal_type.item)]
        case TypeKind.DICT:
            return [_ANY_OBJECT]
        case TypeKind.STRUCT:
            return [frozenset(literal_type.fields or {})]
        case TypeKind.FILE | TypeKind.NDARRAY | TypeKind.DATAFRAME:
            return [frozenset({"uri", "name"})]
        case TypeKind.DIRECTORY:
            return [frozenset({"uri"})]
        case TypeKind.UNION:
            return [UNION_KEYS]
    return []  # pragma: no cover


def variant_for_shape(union: LiteralType, shape: Shape) -> LiteralType | None:
    """The one variant of `union` a plain literal of this shape is read as, or None when no
    variant or several would take it. A JSON int goes to an `int` variant if there is one
    (rather than a float's or a timedelta's)."""
    if shape == UNION_KEYS or shape == _ANY_OBJECT:
        return None  # a tagged literal, or an object of unknown keys: never plain
    candidates = [v for v in union.variants or [] if _accepts_shape(v, shape)]
    if shape == "int" and len(candidates) > 1:
        candidates = [v for v in candidates if v.kind is TypeKind.INTEGER] or candidates
    return candidates[0] if len(candidates) == 1 else None


def union_value(union: LiteralType, literal: Any) -> tuple[LiteralType, Any]:
    """The variant type and the variant's literal of a union literal.

    A union literal is tagged, `{"variant": <the variant's describe()>, "value": <literal>}`;
    a plain literal of one variant is accepted too (a value of type `A` bound to an `A | B`
    parameter, a JSON input) when its shape names one variant (see `variant_for_shape`).

    Raises:
        ValueError: the literal names no variant, or its shape fits none or several; the
            message says which.
    """
    variants = union.variants or []
    if isinstance(literal, dict) and set(literal) == UNION_KEYS:
        variant = union.variant(literal["variant"])
        if variant is None:
            names = ", ".join(repr(v.describe()) for v in variants)
            raise ValueError(f"variant {literal['variant']!r} is not one of {names}")
        return variant, literal["value"]
    shape = json_shape(literal)
    chosen = variant_for_shape(union, shape)
    if chosen is not None:
        return chosen, literal
    fitting = [v.describe() for v in variants if _accepts_shape(v, shape)]
    which = f"it could be {' or '.join(fitting)}" if fitting else "it fits none of them"
    raise ValueError(
        f"cannot tell which variant of {union.describe()} the value is ({which}); write it "
        'as {"variant": "<one of them>", "value": ...}'
    )
