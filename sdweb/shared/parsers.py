"""Request bodies: JSON nested deeper than any real client sends is a clear 400, never a 500
(Python's parser and anything that walks the result recursively would run out of stack)."""

import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32


def too_deep(data, limit: int = MAX_DEPTH) -> bool:
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def loads(body: bytes):
    """json.loads that refuses deep nesting with ValueError, like any other bad JSON."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if too_deep(data):
        raise ValueError(f"the JSON is nested more than {MAX_DEPTH} levels deep")
    return data


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return loads(stream.read())
        except UnicodeDecodeError:
            raise ParseError("The body is not UTF-8.")
        except ValueError as error:
            raise ParseError(f"JSON parse error: {error}")
