"""Row 4: SQL statements per no-op execution, from PostgreSQL's own statistics.

pg_stat_statements (preloaded by ops/local_services.py) is reset for the bench database, N
sequential no-ops run, and the calls are summed by a short form of each normalized statement and
divided by N. Transaction control (BEGIN, COMMIT, SAVEPOINT, ...) is counted apart; new sessions
and committed transactions come from pg_stat_database.
"""

import re
import time

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START TRANSACTION", "END")


def short_query(query: str) -> str:
    """A readable, stable label: select lists, insert columns and update assignments elided."""
    text = " ".join(query.replace('"', "").split())
    text = re.sub(r"^SELECT (.+?) FROM ", "SELECT … FROM ", text)
    text = re.sub(r"^INSERT INTO (\S+) \(.*?\) ", r"INSERT INTO \1 (…) ", text)
    text = re.sub(r"^UPDATE (\S+) SET .*? WHERE ", r"UPDATE \1 SET … WHERE ", text)
    text = re.sub(r"^(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT) \S+", r"\1 …", text)
    return text[:140]


def is_foreign_key_check(query: str) -> bool:
    """The query a foreign-key trigger runs for an inserted or updated row (ri_triggers.c)."""
    return re.match(r"SELECT \S+ FROM ONLY ", query) is not None and "FOR KEY SHARE OF x" in query


def is_transaction_control(query: str) -> bool:
    return query.lstrip().upper().startswith(TRANSACTION_CONTROL)


def _database_counters(conn) -> dict:
    row = conn.execute(
        "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return dict(zip(("sessions", "xact_commit", "xact_rollback"), row))


TABLES = ("executions_execution", "executions_executionevent")
STATS_FLUSH_SECONDS = 11


def _table_counters(conn) -> dict:
    rows = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    return {name: (inserted, updated, hot) for name, inserted, updated, hot in rows}


def enable(conn) -> str | None:
    """Create the extension; the reason it is unavailable otherwise."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except Exception as exc:  # noqa: BLE001 - not preloaded (a server started before this change, or external)
        return (
            f"pg_stat_statements unavailable ({str(exc).strip().splitlines()[0]}); restart the embedded server "
            "(`manage.py local_services stop`) so that it preloads it"
        )
    return None


def measure(conn, run_noops, executions: int, top: int = 25) -> dict:
    """Statement calls per execution while `run_noops(executions)` runs."""
    reason = enable(conn)
    if reason:
        return {"skipped": reason}
    dbid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    # cumulative statistics (pg_stat_database, pg_stat_user_tables) reach the server when a backend
    # goes idle for 10 s (PGSTAT_IDLE_INTERVAL), and the API's pooled connections stay open: wait
    time.sleep(STATS_FLUSH_SECONDS)
    before, tables_before = _database_counters(conn), _table_counters(conn)
    conn.execute("SELECT pg_stat_statements_reset(0, %s::oid, 0)", (dbid,))
    run_noops(executions)
    time.sleep(STATS_FLUSH_SECONDS)
    after, tables_after = _database_counters(conn), _table_counters(conn)
    # row writes per execution; an UPDATE that is not HOT writes a new entry in every index of the table
    writes = {}
    for table in TABLES:
        inserted, updated, hot = (
            b - a for a, b in zip(tables_before.get(table, (0, 0, 0)), tables_after.get(table, (0, 0, 0)))
        )
        indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (table,)).fetchone()[0]
        writes[table] = {
            "inserts": round(inserted / executions, 2),
            "updates": round(updated / executions, 2),
            "hot_updates": round(hot / executions, 2),
            "indexes": indexes,
        }
    track = conn.execute("SHOW pg_stat_statements.track").fetchone()[0]
    rows = conn.execute(
        "SELECT query, calls, total_exec_time, rows, toplevel FROM pg_stat_statements WHERE dbid = %s::oid"
        " AND query !~* 'pg_stat_|pg_index|pg_database'",
        (dbid,),  # not the bench's own reads
    ).fetchall()
    groups: dict[str, dict] = {}
    for query, calls, total_ms, returned, toplevel in rows:
        nested = not toplevel or is_foreign_key_check(query)
        label = ("(nested) " if nested else "") + short_query(query)
        kind = "tx" if is_transaction_control(query) else "nested" if nested else "statement"
        group = groups.setdefault(label, {"calls": 0, "total_ms": 0.0, "rows": 0, "kind": kind})
        group["calls"] += calls
        group["total_ms"] += total_ms
        group["rows"] += returned

    def calls(kind):
        return sum(g["calls"] for g in groups.values() if g["kind"] == kind)

    ranked = sorted(groups.items(), key=lambda item: (-item[1]["calls"], item[0]))
    return {
        "executions": executions,
        "statements_per_execution": round(calls("statement") / executions, 2),
        "transaction_control_per_execution": round(calls("tx") / executions, 2),
        # statements the server runs for another one: foreign-key checks of the rows a statement wrote
        "nested_per_execution": round(calls("nested") / executions, 2),
        "track": track,
        "server_ms_per_execution": round(sum(g["total_ms"] for g in groups.values()) / executions, 2),
        "new_sessions_per_execution": round((after["sessions"] - before["sessions"]) / executions, 2),
        "commits_per_execution": round((after["xact_commit"] - before["xact_commit"]) / executions, 2),
        "row_writes_per_execution": writes,
        "top_statements": [
            {
                "query": label,
                "per_execution": round(g["calls"] / executions, 2),
                "mean_ms": round(g["total_ms"] / g["calls"], 3) if g["calls"] else 0,
            }
            for label, g in ranked[:top]
        ],
    }
