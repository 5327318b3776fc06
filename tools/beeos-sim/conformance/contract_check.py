"""Checks raw responses against the vendored BeeOS contract: the status code must be one the
operation lists, and the body must validate against that response's JSON schema (OpenAPI 3.1
schemas are JSON Schema 2020-12), formats included (date-time, int32, int64)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT = Path(__file__).resolve().parent.parent / "contract" / "beeos-platform-v1.yaml"
_URI = "urn:beeos:contract"

FORMATS = FormatChecker()
for _name, _bits in (("int32", 32), ("int64", 64)):

    def _in_range(value, bits=_bits):
        if isinstance(value, bool) or not isinstance(value, int):
            return True  # format only constrains integers; "type" checks the rest
        return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)

    FORMATS.checks(_name)(_in_range)
# date-time needs rfc3339-validator, pinned in requirements.txt; fail loudly if it is missing.
assert "date-time" in FORMATS.checkers, "rfc3339-validator is not installed"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """The vendored contract, ready to judge responses."""

    def __init__(self, path: Path = CONTRACT) -> None:
        self.doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(_URI, resource)

    def response_schema_pointer(self, method: str, path: str, status: int) -> str:
        """The JSON pointer of the schema for `status` of `method path`; fails when the contract
        does not list that status for the operation."""
        operation = self.doc["paths"][path][method.lower()]
        responses = operation["responses"]
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        assert key in responses, (
            f"{method} {path} answered {status}; the contract lists {sorted(responses)}"
        )
        response = responses[key]
        base = ("paths", path, method.lower(), "responses", key)
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[-1]
            base = ("components", "responses", name)
        return _pointer(*base, "content", "application/json", "schema")

    def check(self, method: str, path: str, status: int, body: bytes | str | dict | list) -> None:
        """Asserts that `body` with `status` is a response the contract allows for `method path`."""
        if isinstance(body, (bytes, str)):
            body = json.loads(body)
        pointer = self.response_schema_pointer(method, path, status)
        validator = Draft202012Validator(
            {"$ref": _URI + pointer}, registry=self.registry, format_checker=FORMATS
        )
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method} {path} {status} breaks the contract:\n" + "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
        )
