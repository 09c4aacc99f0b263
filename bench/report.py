"""The printed report of a run (the same figures as bench/results/latest.json)."""


def _f(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _ratio(a, b) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def _row(name, p50="", p90="", p99="", rate="", busy="", cpu="", versus="", off=None):
    """One line of the table; `off`: the fsync-off figures (p50, per s, CPU ms/op) after their columns."""
    if off is None:
        return f"{name:<46} {p50:>8} {p90:>8} {p99:>8} {rate:>9} {busy:>6} {cpu:>9}  {versus}"
    p50_off, rate_off, cpu_off = off
    return (
        f"{name:<46} {p50:>8} {p50_off:>8} {p90:>8} {p99:>8} {rate:>9} {rate_off:>9} {busy:>6} {cpu:>9} "
        f"{cpu_off:>9}  {versus}"
    )


def _by_process(row: dict) -> str:
    parts = row.get("cpu_ms_per_op_by_process", {})
    return ", ".join(f"{kind} {ms:.1f}" for kind, ms in parts.items())


def _errors(r: dict) -> dict:
    return {name: value["error"] for name, value in r.items() if isinstance(value, dict) and "error" in value}


def _table(r: dict) -> list[tuple]:
    """The rows of the main table: (name, p50, p90, p99, per s, busy %, CPU ms/op, versus), as
    formatted strings."""
    errors = _errors(r)
    rows = []
    celery = r.get("celery") if "celery" not in errors else None
    bare_seq = celery["sequential"] if celery else {}
    bare_loop = celery["closed_loop"] if celery else {}
    if celery:
        rows.append(
            (
                "1 bare Celery round trip, sequential",
                _f(bare_seq["p50_ms"]),
                _f(bare_seq["p90_ms"]),
                _f(bare_seq["p99_ms"]),
                "",
                "",
                "",
                "",
            )
        )
        rows.append(
            (
                f"1 bare Celery, {bare_loop['clients']} clients",
                _f(bare_loop.get("p50_ms")),
                "",
                _f(bare_loop.get("p99_ms")),
                _f(bare_loop["per_s"]),
                _f(bare_loop["machine_busy_pct"], 0),
                _f(bare_loop["cpu_ms_per_op"], 2),
                "",
            )
        )
    if "noop" in r and "noop" not in errors:
        n = r["noop"]
        rows.append(
            (
                "2 no-op POST /execute, sequential",
                _f(n["p50_ms"]),
                _f(n["p90_ms"]),
                _f(n["p99_ms"]),
                "",
                "",
                "",
                f"{_ratio(n['p50_ms'], bare_seq.get('p50_ms'))} p50",
            )
        )
    for row in (r.get("load") or []) if "load" not in errors else []:
        versus = (
            (
                f"1/{_ratio(bare_loop.get('per_s'), row['per_s'])} per s, "
                f"{_ratio(row['cpu_ms_per_op'], bare_loop.get('cpu_ms_per_op'))} CPU"
            )
            if bare_loop
            else ""
        )
        rows.append(
            (
                f"3 no-op POST /execute, {row['clients']} clients",
                _f(row.get("p50_ms")),
                "",
                _f(row.get("p99_ms")),
                _f(row["per_s"]),
                _f(row["machine_busy_pct"], 0),
                _f(row["cpu_ms_per_op"], 1),
                versus + (f" ({row['failed']} failed)" if row["failed"] else ""),
            )
        )
    if "stream" in r and "stream" not in errors:
        s = r["stream"]
        rows.append(
            (
                "5 10-chunk stream: first event",
                _f(s["first_event"]["p50_ms"]),
                "",
                _f(s["first_event"]["p99_ms"]),
                "",
                "",
                "",
                "",
            )
        )
        rows.append(
            (
                "5 10-chunk stream: final event",
                _f(s["final_event"]["p50_ms"]),
                "",
                _f(s["final_event"]["p99_ms"]),
                "",
                "",
                "",
                f"model {s['model_ms']} ms, {s['events_per_stream']} SSE events",
            )
        )
    return rows


def render(output: dict) -> str:
    r, m = output["results"], output["machine"]
    off = output.get("fsync_off")  # the same phases on the server restarted with fsync=off
    lines = [
        "",
        f"machine: {m['nproc']} cores, {m['memory_gib']} GiB, Python {m['python']}, PostgreSQL {m['postgresql']} "
        f"(fsync={m['fsync']}, synchronous_commit={m.get('synchronous_commit', '?')}), Redis {m['redis']}; "
        f"load average at start {m['load_average_at_start'][0]:.2f}",
    ]
    if off:
        lines.append(
            "'off' columns: the same phases again, the server restarted with fsync=off (the embedded server's "
            f"old default; load average at their start {off['load_average_at_start'][0]:.2f})"
        )
    header = ("", "p50 ms", "p90 ms", "p99 ms", "per s", "busy%", "CPU ms/op", "vs bare Celery")
    off_rows = {row[0]: (row[1], row[4], row[6]) for row in _table(off["results"])} if off else {}
    lines += ["", _row(*header, off=("p50 off", "/s off", "CPU off") if off else None)]
    for row in _table(r):
        lines.append(_row(*row, off=off_rows.get(row[0], ("-", "-", "-")) if off else None))
    errors = _errors(r)
    celery = r.get("celery") if "celery" not in errors else None
    bare_loop = celery["closed_loop"] if celery else {}
    lines.append("")
    lines.append("CPU ms per operation by process tree (the bench client is this process alone):")
    if bare_loop:
        lines.append(f"  bare Celery {bare_loop['clients']} clients: {_by_process(bare_loop)}")
    for row in (r.get("load") or []) if "load" not in errors else []:
        lines.append(f"  no-op {row['clients']} clients: {_by_process(row)}")
    if off and "load" not in _errors(off["results"]):
        for row in off["results"].get("load") or []:
            lines.append(f"  no-op {row['clients']} clients, fsync=off: {_by_process(row)}")

    if "statements" in r and "statements" not in errors:
        st = r["statements"]
        lines.append("")
        if "skipped" in st:
            lines.append(f"4 statements: skipped: {st['skipped']}")
        else:
            lines.append(
                f"4 statements per no-op sync execution ({st['executions']} sequential): "
                f"{st['statements_per_execution']} statements + {st['transaction_control_per_execution']} "
                f"transaction control (+ {st['nested_per_execution']} nested: foreign-key checks), "
                f"{st['commits_per_execution']} commits, "
                f"{st['new_sessions_per_execution']} new sessions, "
                f"{st['server_ms_per_execution']} ms server time"
            )
            for table, w in st["row_writes_per_execution"].items():
                lines.append(
                    f"  {table}: {w['inserts']} inserts, {w['updates']} updates ({w['hot_updates']} HOT; "
                    f"each other one writes all {w['indexes']} indexes) per execution"
                )
            for top in st["top_statements"]:
                lines.append(f"  {top['per_execution']:5.2f} x {top['mean_ms']:7.3f} ms  {top['query']}")

    if "inflight" in r and "inflight" not in errors:
        i = r["inflight"]
        lines.append("")
        lines.append(
            f"6 in-flight: {i['executions']} executions of ~2 s at once, worker pool {i['worker_pool']}"
            f" --concurrency {i['worker_concurrency']}"
            f"{'' if i['worker_concurrency'] == i['worker_concurrency_requested'] else ' (of ' + str(i['worker_concurrency_requested']) + ' asked)'}"
            f" ({i['worker_processes']} processes): {i['completed']} completed"
            f"{' (capped at ' + _f(i['cap_seconds'], 0) + ' s, ' + str(i['left_cancelled']) + ' cancelled)' if i['capped'] else ''}"
            f", wall {_f(i['wall_seconds'], 2)} s (ideal ~2), {_f(i['per_s'])} executions/s, "
            f"peak running {i['peak_running']}, machine {_f(i['machine_busy_pct'], 0)}% busy"
        )
        lines.append(
            f"  worker RSS {_f(i['worker_rss_mb_idle'])} MB idle -> {_f(i['worker_rss_mb_peak'])} MB peak: "
            f"{_f(i['worker_rss_kb_per_inflight'])} KB per in-flight execution at peak "
            f"({_f(i['worker_rss_growth_kb_per_inflight'])} KB of growth); "
            f"start latency p50 {_f(i['start_latency'].get('p50_ms'))} ms, "
            f"p99 {_f(i['start_latency'].get('p99_ms'))} ms; start errors {i['start_errors']}"
        )

    if "fairness" in r and "fairness" not in errors:
        fair = r["fairness"]
        other = fair["other_workspace_ms"]
        lines.append("")
        lines.append(
            f"9 fairness: one workspace queued {fair['burst']} no-ops; during their drain "
            f"({_f(fair['burst_drained_per_s'])}/s, {fair['burst_still_queued_after']} still queued after) another "
            f"workspace's sync no-op took p50 {_f(other.get('p50_ms'))} ms, p90 {_f(other.get('p90_ms'))} ms, "
            f"p99 {_f(other.get('p99_ms'))} ms"
        )

    for f in (r.get("fanout") or []) if "fanout" not in errors else []:
        lines.append("")
        lines.append(
            f"7 fan-out {f['clients']} SSE clients on one execution: {f['connected']} connected, {f['failed']} failed "
            f"{f['failures'] or ''} in {f['connect_seconds']} s; {f['received_final']} received the final event"
            + (
                ""
                if f["external_event_status"] in (200, 202)
                else f"; POST external-event answered {f['external_event_status']}, resumed in-process"
            )
        )
        peak = f["redis_with_streams"]
        lines.append(
            f"  API RSS {f['api_rss_mb_before']} -> {f['api_rss_mb_streams']} MB = {_f(f['api_rss_kb_per_stream'])} KB "
            f"per open stream ({_f(f['api_rss_kb_per_client'])} KB per client); Redis connected_clients {f['redis_before']['connected_clients']} -> "
            f"{peak['connected_clients']}, pub/sub connections {peak['pubsub_connections']}, "
            f"channel subscribers {peak['channel_subscribers']}"
        )
        lines.append(
            f"  publish -> last client p50 {_f(f['publish_to_last_client_ms']['p50'])} ms, "
            f"p99 {_f(f['publish_to_last_client_ms']['p99'])} ms; -> each client p50 "
            f"{_f(f['publish_to_each_client_ms']['p50'])} ms, p99 {_f(f['publish_to_each_client_ms']['p99'])} ms "
            f"({f['events_published']} events)"
        )

    if "history" in r and "history" not in errors:
        h = r["history"]
        lines.append("")
        lines.append(f"8 history: {h['history']}")
        for label in ("noop", "noop_paid"):
            empty, filled = h[f"{label}_empty"], h[f"{label}_filled"]
            lines.append(
                f"  {label:9} p50 {empty['p50_ms']} ms empty -> {filled['p50_ms']} ms filled "
                f"(p99 {empty['p99_ms']} -> {filled['p99_ms']})"
            )
        for title, rows in (
            ("statements of the no-ops", h["statements"]),
            ("reaper and purge", h["reaper_statements"]),
        ):
            lines.append(f"  {title} (median ms, shared buffers hit+read (read), empty -> filled):")
            for row in rows:
                flag = f"  <-- {row['degrades']}" if row["degrades"] else ""
                lines.append(
                    f"    {_f(row['empty_p50_ms'], 3):>7} -> {row['filled_p50_ms']:7.3f} ms "
                    f"{_f(row['empty_buffers'], 0):>5} -> {row['filled_buffers']:>6.0f} ({row['filled_read']:.0f}) "
                    f"buf  {row['query'][:100]}{flag}"
                )
            for row in rows:
                if row["degrades"]:
                    lines.append(f"    plan of {row['query'][:90]}:")
                    lines += [f"      {line}" for line in row["plan"]]

    for name, error in errors.items():
        lines.append(f"\nphase {name} FAILED: {error}")
    for name, error in _errors(off["results"]).items() if off else ():
        lines.append(f"\nphase {name} with fsync=off FAILED: {error}")
    lines.append(f"\ntotal {output['total_seconds']} s")
    return "\n".join(lines)
