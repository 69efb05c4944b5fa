"""pydantic's validation errors in the project's words, for the deploy file (io/loader.py) and the
command line's options (interfaces/lazyparams.py) alike: "must be at least 1MB", "is required",
"must be a whole number", never "Input should be greater than or equal to 1048576"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nachos_deploy.core.config import IMAGE_HINT
from nachos_deploy.core.units import format_size

BOUNDS = {
    "greater_than_equal": "at least",
    "greater_than": "more than",
    "less_than_equal": "at most",
    "less_than": "less than",
}
SIZE_KEYS = {("memory",), ("maxmemory",), ("max_size",), ("max_payload",), ("max_pending",)}


def in_words(error: Mapping[str, Any], loc: tuple[str, ...]) -> str:
    """The problem one pydantic error (``ValidationError.errors()``) names, at the key ``loc`` of
    the document (empty for a command-line option), without the value given."""
    kind = error["type"]
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if loc and loc[-1].endswith("port") and kind.startswith(("less_than", "greater_than", "int_")):
        message = "must be a port number from 0 to 65535 (0 picks a free port on the host)"
    elif kind.startswith("int_"):
        message = "must be a whole number"
    elif kind.startswith("float_") or kind == "finite_number":
        message = "must be a number"
    elif kind == "bool_parsing" or kind == "bool_type":
        message = "must be true or false"
    elif kind == "string_pattern_mismatch" and loc == ("project",):
        message = (
            "must be a Compose project name: lowercase letters, digits, '-' and '_', starting with a "
            "letter or digit"
        )
    elif kind == "string_pattern_mismatch" and loc[-1:] == ("image",):
        message = IMAGE_HINT
    elif kind == "string_pattern_mismatch" and loc[-1:] == ("user",):
        message = "must be a user name or number, optionally with :group, e.g. 1001:1001 or nobody"
    elif kind == "greater_than_equal" and loc[-1:] == ("memory",):
        message = "must be at least 6MB, the smallest limit the engine takes; or leave it out"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "must be a mapping of keys"
    elif kind == "missing":
        message = "is required"
    elif kind == "literal_error" and isinstance(error.get("ctx"), dict):
        message = f"must be {str(error['ctx'].get('expected', '')).replace('False', 'false')}"
    elif kind == "string_type":
        message = "must be text"
    elif kind == "list_type":
        message = "must be a list"
    elif kind in BOUNDS and isinstance(error.get("ctx"), dict) and len(error["ctx"]) == 1:
        (limit,) = error["ctx"].values()
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # an option's float bound (--timeout): 1, not 1.0
        given = error.get("input")  # a size is written with its unit ('1KB'); a count is not
        sized = loc[-1:] in SIZE_KEYS or (isinstance(given, str) and given.strip()[-1:].isalpha())
        shown = format_size(limit) if sized and isinstance(limit, int) else limit
        message = f"must be {BOUNDS[kind]} {shown}"
    return message
