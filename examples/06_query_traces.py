"""The seed's DuckDB queries, run against .flock/traces.duckdb (read-only, so an application may
keep tracing meanwhile). The first query needs `workflow_name` in its GROUP BY to be valid
DuckDB SQL; that is the only change.

    python examples/02_names_and_attributes.py && python examples/06_query_traces.py
"""

import duckdb

conn = duckdb.connect(".flock/traces.duckdb", read_only=True)

# Find all workflow traces
workflows = conn.execute("""
    SELECT
        trace_id,
        json_extract(attributes, '$.workflow.name') as workflow_name,
        COUNT(*) as span_count,
        MIN(start_time) as start_time,
        MAX(end_time) as end_time,
        (MAX(end_time) - MIN(start_time)) / 1000000.0 as duration_ms
    FROM spans
    WHERE json_extract(attributes, '$.flock.workflow') = 'true'
    GROUP BY trace_id, workflow_name
    ORDER BY start_time DESC
""").fetchall()

for workflow in workflows:
    print(f"Workflow: {workflow[1]} - {workflow[5]:.2f}ms ({workflow[2]} spans)")

# Find Slowest Workflows
slowest = conn.execute("""
    SELECT
        json_extract(attributes, '$.workflow.name') as workflow,
        AVG((end_time - start_time) / 1000000.0) as avg_duration_ms,
        COUNT(*) as executions
    FROM spans
    WHERE name LIKE '%workflow%'
      AND json_extract(attributes, '$.flock.workflow') = 'true'
    GROUP BY workflow
    ORDER BY avg_duration_ms DESC
    LIMIT 10
""").fetchall()
for workflow, avg_ms, executions in slowest:
    print(f"Slowest: {workflow} - {avg_ms:.2f}ms avg over {executions}")

# Nested Traces Not Visible: verify the hierarchy of one trace
your_trace_id = workflows[0][0]
for name, parent_id in conn.execute(
    """
    SELECT name, parent_id
    FROM spans
    WHERE trace_id = ?
    ORDER BY start_time
""",
    [your_trace_id],
).fetchall():
    print(f"Span: {name} parent={parent_id}")
