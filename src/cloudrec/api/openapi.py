"""The dialects' request and answer schemas in ``/openapi.json``, without letting FastAPI
validate them.

A dialect parses its own bodies (it must answer malformed input with its own codes and
messages, HTTP 200 in its envelope, where FastAPI's validation would answer 422 in another
shape), so its routes declare no body parameter.  What they accept is published instead
through ``openapi_extra`` (:func:`operation`), and the schemas it refers to are added to
``components.schemas`` by :func:`publish`.  The schemas are JSON Schema (OpenAPI 3.1), built
with the small helpers below so that a dialect's module reads like its vendor's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

Schema = dict[str, Any]

COMPONENT_REF = "#/components/schemas/"


def ref(name: str) -> Schema:
    return {"$ref": COMPONENT_REF + name}


def integer(
    description: str = "",
    *,
    lo: int | None = None,
    hi: int | None = None,
    enum: list[int] | None = None,
    default: int | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    fmt: str | None = None,
) -> Schema:
    """An integer; ``lo``/``hi`` are inclusive unless ``lo_open``/``hi_open``."""
    s: Schema = {"type": "integer"}
    if fmt:
        s["format"] = fmt
    if enum is not None:
        s["enum"] = enum
    if lo is not None:
        s["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        s["exclusiveMaximum" if hi_open else "maximum"] = hi
    if default is not None:
        s["default"] = default
    return _described(s, description)


def number(description: str = "", *, lo: float, hi: float) -> Schema:
    return _described({"type": "number", "minimum": lo, "maximum": hi}, description)


def string(
    description: str = "",
    *,
    max_len: int | None = None,
    min_len: int | None = None,
    enum: list[str] | None = None,
    pattern: str | None = None,
    default: str | None = None,
) -> Schema:
    s: Schema = {"type": "string"}
    if min_len is not None:
        s["minLength"] = min_len
    if max_len is not None:
        s["maxLength"] = max_len
    if enum is not None:
        s["enum"] = enum
    if pattern is not None:
        s["pattern"] = pattern
    if default is not None:
        s["default"] = default
    return _described(s, description)


def boolean(description: str = "", *, default: bool | None = None) -> Schema:
    s: Schema = {"type": "boolean"}
    if default is not None:
        s["default"] = default
    return _described(s, description)


def array(items: Schema, description: str = "", *, max_items: int | None = None) -> Schema:
    s: Schema = {"type": "array", "items": items}
    if max_items is not None:
        s["maxItems"] = max_items
    return _described(s, description)


def obj(description: str = "", *, required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    """An object of ``properties`` (named verbatim, so vendor names pass through as keyword
    arguments); further properties are allowed, as the dialects ignore unknown fields."""
    s: Schema = {"type": "object", "properties": properties}
    if required:
        s["required"] = list(required)
    return _described(s, description)


def _described(s: Schema, description: str) -> Schema:
    if description:
        s["description"] = description
    return s


def json_body(schema_name: str, description: str = "") -> Schema:
    """``openapi_extra`` for a required JSON body of component ``schema_name``."""
    body: Schema = {
        "required": True,
        "content": {"application/json": {"schema": ref(schema_name)}},
    }
    return {"requestBody": _described(body, description)}


def answers(schema_name: str, description: str, **other: Schema) -> Schema:
    """``openapi_extra`` for the answers: HTTP 200 with component ``schema_name``, plus
    ``other`` answers by status code (``other={"404": {...}}`` through ``**``)."""
    ok = {"description": description, "content": {"application/json": {"schema": ref(schema_name)}}}
    return {"responses": {"200": ok, **other}}


def query(name: str, schema: Schema, description: str = "", *, required: bool = False) -> Schema:
    return _parameter("query", name, schema, description, required)


def header(name: str, schema: Schema, description: str = "", *, required: bool = False) -> Schema:
    return _parameter("header", name, schema, description, required)


def path(name: str, schema: Schema, description: str = "") -> Schema:
    return _parameter("path", name, schema, description, True)


def _parameter(where: str, name: str, schema: Schema, description: str, required: bool) -> Schema:
    p: Schema = {"name": name, "in": where, "required": required, "schema": schema}
    return _described(p, description)


def operation(*parts: Schema) -> Schema:
    """One ``openapi_extra`` from several (``parameters`` lists are joined)."""
    merged: Schema = {}
    for part in parts:
        for key, value in part.items():
            if key == "parameters":
                merged.setdefault("parameters", []).extend(value)
            else:
                merged[key] = value
    return merged


def publish(app: FastAPI, components: Mapping[str, Schema]) -> None:
    """Make ``app.openapi()`` hold ``components`` among its ``components.schemas`` (once
    generated, FastAPI caches the document in ``app.openapi_schema``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
