"""A skill version's manifest: its inputs are checked against `inputs_schema` (JSON Schema, draft
2020-12) before an execution is created; every failing field is reported, not only the first."""

from jsonschema import Draft202012Validator


def inputs_errors(manifest: dict, inputs) -> list[dict]:
    """[{"field": "topic", "message": ...}, ...]; empty when the inputs are valid."""
    schema = (manifest or {}).get("inputs_schema") or {"type": "object"}
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = []
    for error in sorted(validator.iter_errors(inputs), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "/".join(str(part) for part in error.absolute_path)
        if error.validator == "required":  # name the missing property itself
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path = "/".join(filter(None, [path, missing]))
        errors.append({"field": f"inputs.{path.replace('/', '.')}" if path else "inputs", "message": error.message})
    return errors
