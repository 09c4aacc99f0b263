"""The hook point of a suspension that waits for the outside: a client tool, an approval, an
external event (the ones with a `suspended` event; a wait for a sub-execution is internal).

`services.do_suspend_execution` calls `do_suspension_effects` inside the transaction that moved the
row and logged its `suspended` event, so an effect (the `execution.suspended` webhook's outbox row)
is written with the transition or not at all. Apps above executions register their effects from
their AppConfig.ready, as with executions/terminal.py, so executions imports none of them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class SuspensionOutcome:
    execution_id: UUID
    public_id: str
    workspace_id: UUID
    state: str  # one of SUSPENDED_STATES
    payload: dict  # the `suspended` event's: what it waits for (node_id, pending_tool_call_ids, prompt, ...)


SuspensionEffect = Callable[[SuspensionOutcome], None]
_effects: list[SuspensionEffect] = []


def register_suspension_effect(effect: SuspensionEffect) -> None:
    if effect not in _effects:
        _effects.append(effect)


def do_suspension_effects(outcome: SuspensionOutcome) -> None:
    """Run every effect; call inside the suspending transition's transaction (the row is updated)."""
    for effect in _effects:
        effect(outcome)
