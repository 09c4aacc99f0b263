"""Row 8 (on by default, `--no-history` skips it): the no-op cost must not grow with history.

Two databases on the same server, both migrated like the real one:
- `bench_history_empty`: created fresh each run, nothing in it but the bench's tenant;
- `bench_history`: filled once with `--history-executions` executions (default 1M) and 20 events
  each (20M), a mix of tenants, workspaces, principals, customers with credit ledgers, states
  and idempotency keys, generated in SQL (INSERT ... SELECT generate_series); kept across runs
  (`--history-refill` fills it again). The bench's own tenant there gets 100k of those executions
  (2M events) and its paying customer a 200k-entry credit ledger.

On each: the sequential no-op (plain, and the paid path: a customer key and credit rules), then the same again with auto_explain
(log_analyze, log_buffers, JSON) loaded for that database only, plus one reaper pass, so that
every statement the API, the SSE relay and the worker run is logged with its real plan. The
plans are grouped by normalized statement and compared: seq scans and growth of time or buffers.
"""

import json
import os
import re
import subprocess
import sys
import time

from bench.harness import REPO, connect, database_url, embedded_postgres, log, percentile
from bench.scenarios import noop
from bench.scenarios.statements import short_query

FILLED_DB, EMPTY_DB = "bench_history", "bench_history_empty"
EVENTS_PER_EXECUTION = 20
TENANTS, WORKSPACES, PRINCIPALS, CUSTOMERS = 200, 500, 20_000, 5_000
FIXTURE_LEDGER_ENTRIES = 200_000
OWN_EXECUTIONS = 100_000  # of the filled history, moved to the bench's own workspace and principal
AUTO_EXPLAIN = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_format": "json",
}


# --- databases --------------------------------------------------------------------------------------


def _exists(admin, name: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _recreate(admin, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": database_url(name)}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)


def _fixture(name: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url(name)}
    output = subprocess.run(
        [sys.executable, "bench/fixtures.py"], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _filled_info(name: str) -> dict | None:
    with connect(name) as conn:
        row = conn.execute("SELECT to_regclass('bench_history_info')").fetchone()
        if row[0] is None:
            return None
        info = conn.execute("SELECT executions, events, fill_seconds FROM bench_history_info").fetchone()
    return dict(zip(("executions", "events", "fill_seconds"), info)) if info else None


def _insert(conn, table: str, given: dict, source: str) -> None:
    """INSERT ... SELECT with the given column expressions; every other NOT NULL column without a
    database default (Django keeps defaults in Python) gets a neutral value of its type."""
    neutral = {
        "character varying": "''",
        "text": "''",
        "integer": "0",
        "bigint": "0",
        "smallint": "0",
        "numeric": "0",
        "double precision": "0",
        "boolean": "false",
        "date": "current_date",
        "jsonb": "'{}'::jsonb",
        "timestamp with time zone": "now()",
        "uuid": "gen_random_uuid()",
    }
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s"
        " AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        (table,),
    ).fetchall()
    expressions = dict(given)
    for column, data_type in columns:
        expressions.setdefault(column, neutral[data_type])
    names = ", ".join(f'"{c}"' for c in expressions)
    conn.execute(f"INSERT INTO {table} ({names}) SELECT {', '.join(expressions.values())} FROM {source}")


def _uuid(prefix: str, number: str) -> str:
    return f"md5('{prefix}' || ({number}))::uuid"


def fill(name: str, executions: int) -> dict:
    """Generate the history in SQL; returns the counts and the time it took."""
    started = time.perf_counter()
    with connect(name) as conn:
        # a bulk load: no foreign-key trigger per row (the rows are consistent by construction)
        conn.execute("SET session_replication_role = replica")

        def step(what, table, given, source):
            t0 = time.perf_counter()
            _insert(conn, table, given, source)
            log(f"    {what}: {time.perf_counter() - t0:.1f} s")

        p_ws = f"(i % {WORKSPACES})"  # a principal's (and its customer's) workspace
        step(
            "tenants",
            "accounts_tenant",
            {"id": _uuid("t", "i"), "name": "'tenant ' || i"},
            f"generate_series(0, {TENANTS - 1}) i",
        )
        step(
            "workspaces",
            "accounts_workspace",
            {"id": _uuid("w", "i"), "tenant_id": _uuid("t", f"i % {TENANTS}"), "name": "'workspace ' || i"},
            f"generate_series(0, {WORKSPACES - 1}) i",
        )
        step(
            "customers",
            "accounts_customer",
            {"id": _uuid("c", "i"), "workspace_id": _uuid("w", p_ws), "external_id": "'cus_' || i"},
            f"generate_series(0, {CUSTOMERS - 1}) i",
        )
        step(
            "principals",
            "accounts_principal",
            {
                "id": _uuid("p", "i"),
                "tenant_id": _uuid("t", f"{p_ws} % {TENANTS}"),
                "workspace_id": _uuid("w", p_ws),
                "kind": "CASE WHEN i < 500 THEN 'service' ELSE 'end_user' END",
                "name": "'principal ' || i",
                "customer_id": f"CASE WHEN i % 4 = 0 THEN {_uuid('c', f'i % {CUSTOMERS}')} END",
            },
            f"generate_series(0, {PRINCIPALS - 1}) i",
        )
        step(
            "api keys",
            "accounts_apikey",
            {
                "id": _uuid("k", "i"),
                "workspace_id": _uuid("w", p_ws),
                "principal_id": _uuid("p", "i"),
                "kind": "CASE WHEN i < 500 THEN 'workspace' ELSE 'end_user' END",
                "prefix": "CASE WHEN i < 500 THEN 'wak_' ELSE 'eak_' END || substr(md5('k' || i), 1, 12)",
                "secret_hash": "md5('s' || i) || md5('S' || i)",
                "last_used_at": "now() - interval '1 day'",
            },
            f"generate_series(0, {PRINCIPALS - 1}) i",
        )
        step(
            "credit accounts",
            "accounts_creditaccount",
            {
                "id": _uuid("a", "i"),
                "workspace_id": _uuid("w", p_ws),
                "customer_id": _uuid("c", "i"),
                "balance": "1000",
            },
            f"generate_series(0, {CUSTOMERS - 1}) i",
        )
        step(
            "agents",
            "agents_agent",
            {
                "id": _uuid("g", "i"),
                "workspace_id": _uuid("w", "i"),
                "name": "'agent ' || i",
                "requires_user_message": "true",
            },
            f"generate_series(0, {WORKSPACES - 1}) i",
        )
        step(
            "agent versions",
            "agents_agentversion",
            {
                "id": _uuid("v", "i"),
                "agent_id": _uuid("g", "i"),
                "number": "1",
                "published_at": "now()",
                "workflow": """'{"nodes": [{"id": "n", "type": "ai", "model": {"provider": "builtin"}}]}'::jsonb""",
            },
            f"generate_series(0, {WORKSPACES - 1}) i",
        )
        conn.execute("UPDATE agents_agent SET live_version_id = md5('v' || substr(name, 7))::uuid")

        # executions: principal i % PRINCIPALS; 90% completed, 6% failed, 3% cancelled, the rest
        # suspended, running or queued; created over 90 days; a quarter on a customer's account
        p = f"(i % {PRINCIPALS})"
        w = f"({p} % {WORKSPACES})"
        state = (
            "CASE WHEN i % 1000 < 900 THEN 'completed' WHEN i % 1000 < 960 THEN 'failed'"
            " WHEN i % 1000 < 990 THEN 'cancelled' WHEN i % 1000 < 995 THEN 'waiting_for_external_event'"
            " WHEN i % 1000 < 998 THEN 'awaiting_approval' WHEN i % 1000 < 999 THEN 'running' ELSE 'queued' END"
        )
        created = f"now() - (((i::bigint * 7919) % {90 * 86400}) * interval '1 second')"
        # the events' indexes are built once at the end (sorted), instead of growing row by row
        conn.execute("SET maintenance_work_mem = '512MB'")
        event_constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'executions_executionevent'::regclass AND contype IN ('p', 'u')"
        ).fetchall()
        for constraint, _ in event_constraints:
            conn.execute(f'ALTER TABLE executions_executionevent DROP CONSTRAINT "{constraint}"')
        batch = 100_000
        for first in range(0, executions, batch):
            last = min(executions, first + batch) - 1
            step(
                f"executions {first:,}-{last:,}",
                "executions_execution",
                {
                    "id": _uuid("e", "i"),
                    "tenant_id": _uuid("t", f"{w} % {TENANTS}"),
                    "workspace_id": _uuid("w", w),
                    "principal_id": _uuid("p", p),
                    "agent_version_id": _uuid("v", w),
                    "source": "CASE WHEN i % 2 = 0 THEN 'api' ELSE 'stream' END",
                    "state": state,
                    "inputs": """'{"message": "hello"}'::jsonb""",
                    "outputs": """CASE WHEN i % 1000 < 900 THEN '{"text": "an answer", "parsed_output": null}'::jsonb END""",
                    "input_tokens": "12",
                    "output_tokens": "40",
                    "attempt": "1",
                    "last_event_seq": str(EVENTS_PER_EXECUTION),
                    "credit_account_id": f"CASE WHEN {p} % 4 = 0 THEN {_uuid('a', f'{p} % {CUSTOMERS}')} END",
                    "idempotency_key": "CASE WHEN i % 5 = 0 THEN 'idem-' || i ELSE '' END",
                    "lease_expires_at": "CASE WHEN i % 1000 = 998 THEN now() + interval '1 hour' END",
                    "created_at": created,
                    "updated_at": created,
                    "started_at": created,
                    "dispatched_at": created,
                    "finished_at": f"CASE WHEN i % 1000 < 990 THEN {created} + interval '2 seconds' END",
                },
                f"generate_series({first}, {last}) i",
            )
            event_type = (
                "CASE WHEN s = 1 THEN 'start' WHEN s = 2 THEN 'node_start' "
                f"WHEN s = {EVENTS_PER_EXECUTION - 1} THEN 'node_complete' "
                f"WHEN s = {EVENTS_PER_EXECUTION} THEN 'final' ELSE 'text' END"
            )
            step(
                f"  their {EVENTS_PER_EXECUTION} events each",
                "executions_executionevent",
                {
                    "execution_id": "e.id",
                    "seq": "s",
                    "type": event_type,
                    "data": f"jsonb_build_object('type', {event_type}, 'seq', s, 'execution_id', 'execution:' || e.id,"
                    " 'text', ' word')",
                    "created_at": "e.created_at + s * interval '50 milliseconds'",
                },
                f"(SELECT {_uuid('e', 'i')} AS id, {created} AS created_at FROM generate_series({first}, {last}) i) e,"
                f" generate_series(1, {EVENTS_PER_EXECUTION}) s",
            )
        for constraint, definition in event_constraints:
            t0 = time.perf_counter()
            conn.execute(f'ALTER TABLE executions_executionevent ADD CONSTRAINT "{constraint}" {definition}')
            log(f"    events: {constraint}: {time.perf_counter() - t0:.1f} s")
        step(
            "ledger entries (hold, release, charge)",
            "accounts_creditentry",
            {
                "account_id": "x.credit_account_id",
                "execution_id": "x.id",
                "kind": "(ARRAY['hold', 'release', 'charge'])[k]",
                "amount": "(ARRAY[-5, 5, -2])[k]",
                "balance_after": "1000",
                "created_at": "x.created_at",
            },
            "executions_execution x, generate_series(1, 3) k WHERE x.credit_account_id IS NOT NULL",
        )
        step(
            "idempotency keys",
            "executions_idempotencykey",
            {
                "workspace_id": "x.workspace_id",
                "key": "x.idempotency_key",
                "request_hash": "md5(x.idempotency_key)",
                "execution_id": "x.id",
                "created_at": "x.created_at",
                "expires_at": "x.created_at + interval '24 hours'",
            },
            "executions_execution x WHERE x.idempotency_key <> ''",
        )
        t0 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        log(f"    vacuum analyze: {time.perf_counter() - t0:.1f} s")
        seconds = time.perf_counter() - started
        events = conn.execute("SELECT count(*) FROM executions_executionevent").fetchone()[0]
        conn.execute("CREATE TABLE bench_history_info (executions bigint, events bigint, fill_seconds float)")
        conn.execute("INSERT INTO bench_history_info VALUES (%s, %s, %s)", (executions, events, seconds))
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    return {"executions": executions, "events": events, "fill_seconds": round(seconds, 1), "size": size}


def _give_history(name: str, fixture: dict) -> None:
    """The fixture's caller gets a past of its own, as one that has run for months: 100k of the
    generated executions (with their events) move to its workspace and principal, and the paid
    fixture's customer gets a 200k-entry ledger."""
    account_id = fixture["credit_account_id"]
    with connect(name) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE executions_execution SET tenant_id = %s, workspace_id = %s,"
            " principal_id = (SELECT principal_id FROM accounts_apikey WHERE prefix = %s), credit_account_id = NULL"
            f" WHERE id IN (SELECT {_uuid('e', 'i')} FROM generate_series(0, {OWN_EXECUTIONS - 1}) i)",
            (fixture["tenant_id"], fixture["workspace_id"], fixture["key"][:16]),
        )
        _insert(
            conn,
            "accounts_creditentry",
            {
                "account_id": f"'{account_id}'::uuid",
                "kind": "(ARRAY['hold', 'release', 'charge'])[i % 3 + 1]",
                "amount": "(ARRAY[-5, 5, -2])[i % 3 + 1]",
                "balance_after": "1000",
                "execution_id": "gen_random_uuid()",
                "created_at": "now() - i * interval '1 minute'",
            },
            f"generate_series(1, {FIXTURE_LEDGER_ENTRIES}) i",
        )
        # the moved rows leave dead versions (and index entries): vacuumed, so runs do not pile them up
        conn.execute("VACUUM (ANALYZE) executions_execution, accounts_creditentry")


# --- plans from auto_explain ---------------------------------------------------------------------


def _postgres_log():
    """The embedded server's log, where auto_explain writes (None on another server)."""
    from ops import local_services

    path = local_services.DATA_DIR / "postgres.log"
    return path if embedded_postgres() and path.exists() else None


def _set_auto_explain(name: str, on: bool) -> None:
    with connect(name) as conn:
        for setting, value in AUTO_EXPLAIN.items():
            if on:
                conn.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
            else:
                conn.execute(f'ALTER DATABASE "{name}" RESET {setting}')


LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
HEADER = re.compile(r"LOG:\s+duration: ([\d.]+) ms\s+plan:\s*$")


def _read_plans(path, offset: int) -> list[tuple[float, dict]]:
    """The auto_explain entries written to the server log after `offset`."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    plans, index = [], 0
    while index < len(lines):
        match = HEADER.search(lines[index])
        index += 1
        if not match:
            continue
        body = []
        while index < len(lines) and lines[index].startswith("\t"):
            body.append(lines[index][1:])
            index += 1
        try:
            plans.append((float(match[1]), json.loads("\n".join(body))))
        except ValueError:
            continue  # an entry interleaved with another process's output
    return plans


def _walk(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def _plan_outline(node: dict, depth: int = 0) -> list[str]:
    label = node["Node Type"]
    if node.get("Index Name"):
        label += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        label += f" on {node['Relation Name']}"
    label += f" (rows={node.get('Actual Rows')}, loops={node.get('Actual Loops')})"
    lines = ["  " * depth + label]
    for child in node.get("Plans", []):
        lines += _plan_outline(child, depth + 1)
    return lines


def summarize_plans(plans: list[tuple[float, dict]]) -> dict:
    """Per normalized statement: calls, median and max ms (the machine is shared: the median is the
    robust one), mean shared buffers (hit + read) and reads, seq scans, the slowest call's plan."""
    groups: dict[str, dict] = {}
    for duration, entry in plans:
        text = entry.get("Query Text", "")
        if "bench_history_info" in text or "pg_catalog" in text or "information_schema" in text:
            continue
        label = short_query(LITERAL.sub("?", text))
        plan = entry["Plan"]
        group = groups.setdefault(
            label, {"durations": [], "max_ms": 0.0, "buffers": 0, "read": 0, "seq_scans": set(), "plan": None}
        )
        group["durations"].append(duration)
        group["max_ms"] = max(group["max_ms"], duration)
        group["buffers"] += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        group["read"] += plan.get("Shared Read Blocks", 0)
        group["seq_scans"] |= {n.get("Relation Name") for n in _walk(plan) if n["Node Type"] == "Seq Scan"}
        if group["plan"] is None or duration >= group["max_ms"]:
            group["plan"] = _plan_outline(plan)
    return {
        label: {
            "calls": len(g["durations"]),
            "p50_ms": round(percentile(g["durations"], 50), 3),
            "max_ms": round(g["max_ms"], 3),
            "mean_buffers": round(g["buffers"] / len(g["durations"]), 1),
            "mean_read": round(g["read"] / len(g["durations"]), 1),
            "seq_scans": sorted(s for s in g["seq_scans"] if s),
            "plan": g["plan"],
        }
        for label, g in groups.items()
    }


def compare(empty: dict, filled: dict) -> list[dict]:
    """Each statement of the filled database next to the empty one; `degrades` says why it grows."""
    rows = []
    for label, big in filled.items():
        small = empty.get(label)
        reasons = []
        if big["seq_scans"]:
            reasons.append("seq scan on " + ", ".join(big["seq_scans"]))
        if small and big["mean_buffers"] >= 50 and big["mean_buffers"] >= 4 * max(small["mean_buffers"], 1):
            reasons.append(f"buffers {small['mean_buffers']} -> {big['mean_buffers']}")
        if small and big["p50_ms"] >= 0.2 and big["p50_ms"] >= 3 * max(small["p50_ms"], 0.01):
            reasons.append(f"time {small['p50_ms']} -> {big['p50_ms']} ms")
        rows.append(
            {
                "query": label,
                "calls": big["calls"],
                "filled_p50_ms": big["p50_ms"],
                "empty_p50_ms": small["p50_ms"] if small else None,
                "filled_max_ms": big["max_ms"],
                "filled_buffers": big["mean_buffers"],
                "filled_read": big["mean_read"],
                "empty_buffers": small["mean_buffers"] if small else None,
                "degrades": "; ".join(reasons),
                "plan": big["plan"],
            }
        )
    return sorted(rows, key=lambda r: (not r["degrades"], -r["filled_p50_ms"]))


# --- the phase -------------------------------------------------------------------------------------


def _reaper_pass(name: str) -> None:
    """One pass of beat's periodic tasks on that database; the task messages it re-dispatches (of the
    generated `queued` rows) are purged: no worker of another database should receive them."""
    from config.celery import app

    env = {**os.environ, "DATABASE_URL": database_url(name)}
    code = "from workers import tasks; tasks.reap_executions(); tasks.purge_expired_executions()"
    try:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True, capture_output=True
        )
    finally:
        app.control.purge()


def _measure(platform, name: str, requests: int, explained: int) -> dict:
    fixture = _fixture(name)
    if name == FILLED_DB:
        _give_history(name, fixture)
    result = {}
    with platform.running(database=name):
        for label, agent, key in (
            ("noop", "noop", fixture["key"]),
            ("noop_paid", "noop_credits", fixture["customer_key"]),
        ):
            result[label] = noop.sequential(platform.port, fixture["agents"][agent], key, requests)
    path = _postgres_log()
    if path is None:
        return {**result, "plans": {}, "reaper_plans": {}}
    _set_auto_explain(name, True)
    try:
        with platform.running(database=name):
            offset = path.stat().st_size
            for agent, key in (("noop", fixture["key"]), ("noop_credits", fixture["customer_key"])):
                noop.sequential(platform.port, fixture["agents"][agent], key, explained, warmup=2)
            time.sleep(0.5)
            plans = _read_plans(path, offset)
        offset = path.stat().st_size
        _reaper_pass(name)
        reaper_plans = _read_plans(path, offset)
    finally:
        _set_auto_explain(name, False)
    return {**result, "plans": summarize_plans(plans), "reaper_plans": summarize_plans(reaper_plans)}


def run(platform, executions: int, refill: bool, requests: int, explained: int) -> dict:
    with connect("postgres") as admin:
        filled = _exists(admin, FILLED_DB) and _filled_info(FILLED_DB)
        if refill or not filled or filled["executions"] != executions:
            log(f"  filling {FILLED_DB}: {executions:,} executions, {executions * EVENTS_PER_EXECUTION:,} events")
            _recreate(admin, FILLED_DB)
            info = fill(FILLED_DB, executions)
        else:
            info = {**filled, "reused": True}
        log(f"  {FILLED_DB}: {info}")
        _recreate(admin, EMPTY_DB)
    try:
        log("  no-ops on the empty database")
        empty = _measure(platform, EMPTY_DB, requests, explained)
        log("  no-ops on the filled database")
        big = _measure(platform, FILLED_DB, requests, explained)
    finally:
        with connect("postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{EMPTY_DB}" WITH (FORCE)')
    return {
        "history": info,
        "noop_empty": empty["noop"],
        "noop_filled": big["noop"],
        "noop_paid_empty": empty["noop_paid"],
        "noop_paid_filled": big["noop_paid"],
        "statements": compare(empty["plans"], big["plans"]),
        "reaper_statements": compare(empty["reaper_plans"], big["reaper_plans"]),
    }
