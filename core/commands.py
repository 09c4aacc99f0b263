"""Shared output of management commands: one JSON object with --json, `key: value` lines otherwise."""

import json


def write_result(command, result: dict, as_json: bool) -> None:
    if as_json:
        command.stdout.write(json.dumps(result))
    else:
        for key, value in result.items():
            command.stdout.write(f"{key}: {value}")
