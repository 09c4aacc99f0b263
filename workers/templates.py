"""`{{path.to.value}}` templates in workflow options and the built-in model's scripts.

A string that is only one template takes the value as it is (an object stays an object); inside
a longer string a value is written as text (JSON for objects).
"""

import json
import re

TEMPLATE = re.compile(r"\{\{\s*([a-zA-Z0-9_.\-]+)\s*\}\}")


def _lookup(context: dict, path: str):
    value = context
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def render(value, context: dict):
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if not isinstance(value, str):
        return value
    whole = TEMPLATE.fullmatch(value.strip())
    if whole:
        return _lookup(context, whole.group(1))

    def text(match):
        found = _lookup(context, match.group(1))
        return "" if found is None else found if isinstance(found, str) else json.dumps(found)

    return TEMPLATE.sub(text, value)
