"""A skill version's manifest: checked when published; an execution's inputs are checked against
its `inputs_schema` (JSON Schema, draft 2020-12), every failing field reported, not only the first."""

from jsonschema import Draft202012Validator, SchemaError

from accounts.model_keys import DisallowedKeyEnv, check_api_key_env


class InvalidManifest(ValueError):
    pass


def validate_manifest(manifest) -> None:
    """Refuse a manifest whose schemas are not valid JSON Schema, before it is published."""
    if not isinstance(manifest, dict):
        raise InvalidManifest("A manifest is a JSON object.")
    for key in ("inputs_schema", "outputs_schema"):
        if key in manifest:
            try:
                Draft202012Validator.check_schema(manifest[key])
            except SchemaError as exc:
                raise InvalidManifest(f"{key} is not a valid JSON Schema: {exc.message}") from None
    if not isinstance(manifest.get("tools", []), list):
        raise InvalidManifest("tools must be a list of tool names.")
    try:
        check_api_key_env(manifest.get("model"))
    except DisallowedKeyEnv as exc:
        raise InvalidManifest(f"model: {exc}") from None


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
