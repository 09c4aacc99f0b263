"""What the drill checks in PostgreSQL itself (read from outside, over the bridge), and the recovery
figures it measures there: each execution ended exactly once, its log gap-free, the credit ledger
exact (the rules of tests/test_drills.py), and how long a fault stalled the executions it hit."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from tests.production import seed
from tests.production.workload import TERMINAL

TERMINAL_STATES = {"completed", "failed", "cancelled"}


class Audit:
    def __init__(self, database_url: str, ids: dict):
        self.url, self.ids = database_url, ids

    def query(self, sql: str, params=()) -> list[tuple]:
        last = None
        for _ in range(20):  # the server may be restarting (the PostgreSQL fault)
            try:
                with psycopg.connect(self.url, connect_timeout=3, autocommit=True) as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.5)
        raise last

    # --- the end state ------------------------------------------------------------------------------

    def executions(self) -> dict[str, dict]:
        rows = self.query(
            "SELECT x.id::text, x.state, x.attempt, x.source, x.error, v.agent_id::text FROM executions_execution x "
            "LEFT JOIN agents_agentversion v ON v.id = x.agent_version_id WHERE x.workspace_id = %s",
            [self.ids["workspace_id"]],
        )
        keys = ("state", "attempt", "source", "error", "agent_id")
        return {row[0]: dict(zip(keys, row[1:])) for row in rows}

    def events(self) -> dict[str, list[tuple[int, str]]]:
        rows = self.query(
            "SELECT e.execution_id::text, e.seq, e.type FROM executions_executionevent e "
            "JOIN executions_execution x ON x.id = e.execution_id WHERE x.workspace_id = %s "
            "ORDER BY e.execution_id, e.seq",
            [self.ids["workspace_id"]],
        )
        logs: dict[str, list[tuple[int, str]]] = {}
        for execution_id, seq, kind in rows:
            logs.setdefault(execution_id, []).append((seq, kind))
        return logs

    def unfinished(self) -> list[str]:
        return [i for i, row in self.executions().items() if row["state"] not in TERMINAL_STATES]

    def each_ended_exactly_once(self) -> dict[str, dict]:
        """Every execution of the workspace: a terminal state, exactly one terminal event and it last,
        seq 1..n without a gap or a double. Returns the executions."""
        executions, logs = self.executions(), self.events()
        problems = []
        for execution_id, row in executions.items():
            log = logs.get(execution_id, [])
            seqs = [seq for seq, _ in log]
            terminal = [kind for _, kind in log if kind in TERMINAL]
            if row["state"] not in TERMINAL_STATES:
                problems.append(f"{execution_id} {row['source']} still {row['state']}")
            elif seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"{execution_id} log {seqs}")
            elif len(terminal) != 1 or log[-1][1] not in TERMINAL:
                problems.append(f"{execution_id} terminal events {terminal}, last {log[-1:]}")
        assert not problems, "\n".join(problems[:30])
        return executions

    def ledger_is_exact(self, executions: dict[str, dict]) -> Decimal:
        """The customer's account: its entries add up to its balance, never below zero; each paid
        execution one hold and its release, and a charge if it completed; nothing else charged.
        Returns the balance."""
        [(account_id, balance)] = self.query(
            "SELECT a.id, a.balance FROM accounts_creditaccount a JOIN accounts_customer c ON c.id = a.customer_id "
            "WHERE c.external_id = %s",
            [seed.CUSTOMER],
        )
        entries = self.query(
            "SELECT kind, amount, balance_after, execution_id::text FROM accounts_creditentry "
            "WHERE account_id = %s ORDER BY id",
            [account_id],
        )
        assert sum((amount for _, amount, _, _ in entries), Decimal(0)) == balance
        assert all(after >= 0 for _, _, after, _ in entries)
        per_execution: dict[str, list[tuple[str, Decimal]]] = {}
        for kind, amount, _, execution_id in entries:
            if kind != "grant":
                per_execution.setdefault(execution_id, []).append((kind, amount))
        paid = {i for i, row in executions.items() if row["agent_id"] == self.ids["paid_agent_id"]}
        assert set(per_execution) == paid, (len(per_execution), len(paid))
        charges = Decimal(0)
        for execution_id, kinds in per_execution.items():
            completed = executions[execution_id]["state"] == "completed"
            expected = ["hold", "release", "charge"] if completed else ["hold", "release"]
            assert [kind for kind, _ in kinds] == expected, (execution_id, kinds)
            assert kinds[0][1] == -kinds[1][1] == -seed.HOLD, (execution_id, kinds)
            if completed:
                assert kinds[2][1] == -seed.CHARGE, (execution_id, kinds)
                charges += seed.CHARGE
        assert balance == seed.GRANT - charges
        return balance

    # --- recovery figures ---------------------------------------------------------------------------

    def running_on(self, host_name: str) -> dict[str, int]:
        """The executions a host's worker holds the lease of: id -> attempt."""
        rows = self.query(
            "SELECT id::text, attempt FROM executions_execution WHERE workspace_id = %s AND state = 'running' "
            "AND lease_owner LIKE %s",
            [self.ids["workspace_id"], f"{host_name}:%"],
        )
        return dict(rows)

    def next_attempt_gaps(self, held: dict[str, int], since: float, timeout: float) -> dict[str, float | None]:
        """For each execution in `held` (id -> its attempt at `since`, a time.time()): seconds from
        `since` to the first event written by a later attempt, or None when the execution ended in
        the attempt it had (its worker finished it)."""
        gaps: dict[str, float | None] = {}
        claimed_after: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        previous_poll = since
        while len(gaps) < len(held) and time.monotonic() < deadline:
            now = time.time()
            rows = self.query(
                "SELECT id::text, attempt, state FROM executions_execution WHERE id = ANY(%s::uuid[])", [list(held)]
            )
            for execution_id, attempt, state in rows:
                if execution_id in gaps:
                    continue
                if attempt > held[execution_id]:
                    claimed_after.setdefault(execution_id, previous_poll)
                elif state in TERMINAL_STATES:
                    gaps[execution_id] = None
            for execution_id, after in claimed_after.items():
                if execution_id in gaps:
                    continue
                [(first,)] = self.query(
                    "SELECT min(created_at) FROM executions_executionevent WHERE execution_id = %s AND created_at >= %s",
                    [execution_id, datetime.fromtimestamp(after, UTC)],
                )
                if first is not None:
                    gaps[execution_id] = first.timestamp() - since
            previous_poll = now
            time.sleep(0.25)
        missing = set(held) - set(gaps)
        assert not missing, f"no next attempt within {timeout} s for {sorted(missing)}"
        return gaps

    def hand_back_gaps(self, execution_ids: list[str]) -> dict[str, float]:
        """For each execution its worker handed back (a `resumed` event from `running`): seconds from
        that event to the next event, the first of the next attempt."""
        gaps = {}
        for execution_id in execution_ids:
            rows = self.query(
                "SELECT h.created_at, (SELECT min(n.created_at) FROM executions_executionevent n"
                "  WHERE n.execution_id = h.execution_id AND n.seq > h.seq)"
                " FROM executions_executionevent h WHERE h.execution_id = %s AND h.type = 'resumed'"
                " AND h.data->>'from_state' = 'running' ORDER BY h.seq DESC LIMIT 1",
                [execution_id],
            )
            if rows and rows[0][1] is not None:
                gaps[execution_id] = (rows[0][1] - rows[0][0]).total_seconds()
        return gaps

    def attempts(self) -> Counter:
        return Counter(row["attempt"] for row in self.executions().values())
