"""The one hook point of a terminal transition (completed, failed, cancelled).

Besides its row and its event, an execution's end settles its credits (accounts), records the
exchange in its conversation (conversations) and tells its parent (executions.sub_executions).
`services._transition` calls `do_terminal_effects` with a `TerminalOutcome` (plain data: ids,
state, usage, outputs), inside the transaction that moved the row and logged its event, so each
effect happens exactly once, atomically with the end (only one terminal transition can win).
The effects are independent of each other; they are wired in one place,
`executions.effects.wire_terminal_effects` (from ExecutionsConfig.ready), so that this module and
services.py import none of the apps they notify. An app above executions (webhooks) registers its
effect from its own AppConfig.ready instead, since executions may not import it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID


@dataclass(frozen=True)
class TerminalOutcome:
    execution_id: UUID
    public_id: str  # how its own surface names it (execution:<uuid> for agents)
    workspace_id: UUID
    state: str
    inputs: dict
    outputs: dict | None
    error: dict | None
    charge: Decimal  # the credits to charge of the hold (0 unless completed)
    credit_account_id: UUID | None
    credits_held: Decimal
    parent_id: UUID | None
    batch_key: str


TerminalEffect = Callable[[TerminalOutcome], None]
_effects: list[TerminalEffect] = []


def register_terminal_effect(effect: TerminalEffect) -> None:
    if effect not in _effects:
        _effects.append(effect)


def do_terminal_effects(outcome: TerminalOutcome) -> None:
    """Run every effect; call inside the terminal transition's transaction (the row is updated)."""
    for effect in _effects:
        effect(outcome)
