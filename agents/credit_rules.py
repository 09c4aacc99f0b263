"""An agent's credit rules: what an execution is estimated (held) and actually charged.

    {"base": 10,                                   # every execution
     "rules": [{"name": "long", "variable": "length", "equals": "long", "cost": 5},
               {"name": "files", "per": "attachment", "cost": 2}],
     "per_1k_tokens": 1,                           # usage, charged on completion
     "max_tokens": 4000}                           # tokens the estimate holds for the usage part

Estimate = base + matching rules + the usage part for `max_tokens`; actual = base + matching rules
+ the usage part for the tokens really used. A run whose actual cost would pass its hold stops.
"""

import math
from decimal import Decimal


def _rule_cost(rule: dict, inputs: dict) -> Decimal:
    cost = Decimal(str(rule.get("cost", 0)))
    if rule.get("per") == "attachment":
        return cost * len(inputs.get("attachments", []))
    if "variable" in rule:
        value = (inputs.get("variables") or {}).get(rule["variable"])
        if "equals" in rule:
            return cost if value == rule["equals"] else Decimal(0)
        return cost if value is not None else Decimal(0)
    return cost


def _usage_cost(rules: dict, tokens: int) -> Decimal:
    per_1k = Decimal(str(rules.get("per_1k_tokens", 0)))
    return per_1k * math.ceil(tokens / 1000) if tokens else Decimal(0)


def quote(rules: dict, inputs: dict) -> dict:
    """The estimate with its breakdown (the preview-credits response and the hold)."""
    base = Decimal(str(rules.get("base", 0)))
    breakdown = [
        {"name": rule.get("name", f"rule_{i}"), "cost": _rule_cost(rule, inputs)}
        for i, rule in enumerate(rules.get("rules", []))
    ]
    usage = _usage_cost(rules, int(rules.get("max_tokens", 0)))
    total = base + sum((r["cost"] for r in breakdown), Decimal(0)) + usage
    return {"base_cost": base, "rules": breakdown, "usage_hold": usage, "total": total}


def actual_cost(rules: dict, inputs: dict, total_tokens: int) -> Decimal:
    estimate = quote(rules, inputs)
    return estimate["total"] - estimate["usage_hold"] + _usage_cost(rules, total_tokens)
