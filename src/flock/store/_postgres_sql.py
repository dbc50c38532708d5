"""The schema of the PostgreSQL store and its SQL statements (see :mod:`flock.store.postgres`).

The tables live in the store's own schema (``search_path``); :data:`MIGRATIONS` are applied
in order under an advisory lock, and ``schema_version`` records how many ran.
"""

from __future__ import annotations

__all__ = [
    "ABANDONED_FINISHING",
    "ARTIFACT_COLUMNS",
    "CLAIM",
    "COMPLETE",
    "ENQUEUE",
    "GIVE_UP",
    "INSERT_ARTIFACT",
    "INSERT_RUN",
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "PUBLISH_RUNS",
    "SCHEMA_VERSION",
]

ARTIFACT_COLUMNS = (
    "id, type, payload::text, produced_by, correlation_id, tags, traceparent, created_at,"
    " visibility::text"
)
MIGRATION_LOCK = 0x666C6F636B  # "flock": the advisory lock key of schema migrations

MIGRATIONS: tuple[str, ...] = (
    # 1: artifacts, consumption records, the work queue.
    """
    CREATE TABLE artifacts (
        seq bigserial NOT NULL UNIQUE,
        id text PRIMARY KEY,
        type text NOT NULL,
        payload jsonb NOT NULL,
        produced_by text NOT NULL,
        correlation_id text NOT NULL,
        tags text[] NOT NULL DEFAULT '{}',
        traceparent text,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX artifacts_type ON artifacts (type, seq);
    CREATE INDEX artifacts_correlation ON artifacts (correlation_id, seq);
    CREATE INDEX artifacts_producer ON artifacts (produced_by, seq);
    CREATE TABLE consumptions (
        seq bigserial PRIMARY KEY,
        artifact_id text NOT NULL,
        agent text NOT NULL,
        run_id bigint,
        consumed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX consumptions_artifact ON consumptions (artifact_id, seq);
    CREATE TABLE runs (
        id bigserial PRIMARY KEY,
        agent text NOT NULL,
        artifact_ids text[] NOT NULL,
        workflow text,
        state text NOT NULL DEFAULT 'queued'
            CHECK (state IN ('queued', 'leased', 'done', 'failed')),
        attempt integer NOT NULL DEFAULT 0,
        worker_id text,
        claimed_at timestamptz,
        lease_until timestamptz,
        previous_worker text,
        previous_claimed_at timestamptz,
        error text,
        enqueued_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        UNIQUE (agent, artifact_ids)
    );
    CREATE INDEX runs_pending ON runs (agent, id) WHERE state IN ('queued', 'leased');
    """,
    # 2: runs know their workflow (failures reported to its publisher); runaway-loop counts.
    """
    ALTER TABLE runs ADD COLUMN correlation_id text;
    ALTER TABLE runs ADD COLUMN runaway boolean NOT NULL DEFAULT false;
    CREATE INDEX runs_failed ON runs (correlation_id, finished_at) WHERE state = 'failed';
    CREATE TABLE run_counts (
        correlation_id text NOT NULL,
        agent text NOT NULL,
        runs bigint NOT NULL,
        PRIMARY KEY (correlation_id, agent)
    );
    """,
    # 3: 'finishing': published, the agent's hooks after publishing still running.
    """
    ALTER TABLE runs DROP CONSTRAINT runs_state_check;
    ALTER TABLE runs ADD CONSTRAINT runs_state_check
        CHECK (state IN ('queued', 'leased', 'finishing', 'done', 'failed'));
    """,
    # 4: which agents may see an artifact (flock.visibility); existing rows are public.
    """
    ALTER TABLE artifacts ADD COLUMN IF NOT EXISTS visibility jsonb NOT NULL
        DEFAULT '{"kind": "Public"}'::jsonb;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code migrates to."""

INSERT_ARTIFACT = (
    "INSERT INTO artifacts (id, type, payload, produced_by, correlation_id, tags, traceparent,"
    " created_at, visibility) VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s::jsonb)"
    " ON CONFLICT (id) DO NOTHING"
)
INSERT_RUN = (
    "INSERT INTO runs (agent, artifact_ids, workflow) VALUES (%s, %s, %s)"
    " ON CONFLICT (agent, artifact_ids) DO NOTHING"
)
ENQUEUE = """
req AS (
    SELECT r.agent, ARRAY(SELECT jsonb_array_elements_text(r.ids)) AS ids, r.workflow,
        r.cid, r.max_runs, r.error, r.ord
    FROM jsonb_to_recordset(%(runs)s::jsonb)
        AS r(agent text, ids jsonb, workflow text, cid text, max_runs integer, error text,
            ord integer)
    WHERE {guard}
), counted AS (
    -- Runs per (workflow, agent) across all workers; the row lock serializes publishers.
    INSERT INTO run_counts (correlation_id, agent, runs)
    SELECT cid, agent, count(*) FROM req WHERE cid IS NOT NULL
    GROUP BY cid, agent ORDER BY cid, agent
    ON CONFLICT (correlation_id, agent) DO UPDATE SET runs = run_counts.runs + excluded.runs
    RETURNING correlation_id, agent, runs
), ranked AS (
    SELECT req.*, c.runs - count(*) OVER w + row_number() OVER (w ORDER BY req.ord) AS n
    FROM req LEFT JOIN counted AS c ON c.correlation_id = req.cid AND c.agent = req.agent
    WINDOW w AS (PARTITION BY req.cid, req.agent)
), triggered AS (
    INSERT INTO runs (agent, artifact_ids, workflow, correlation_id, state, runaway, error,
        finished_at)
    SELECT agent, ids, workflow, cid,
        CASE WHEN error IS NOT NULL OR n > max_runs THEN 'failed' ELSE 'queued' END,
        error IS NULL AND coalesce(n > max_runs, false),
        coalesce(error, CASE WHEN n > max_runs THEN format('agent %%L ran %%s times in'
            ' workflow %%L and was stopped as a runaway loop; fix the loop or raise'
            ' Flock(max_agent_runs=...)', agent, max_runs, cid) END),
        CASE WHEN error IS NOT NULL OR n > max_runs THEN now() END
    FROM ranked ORDER BY ord
    ON CONFLICT (agent, artifact_ids) DO NOTHING
    RETURNING state
)"""
PUBLISH_RUNS = (
    "WITH "
    + ENQUEUE.format(guard="true")
    + " SELECT pg_notify(%(channel)s, 'q') FROM (SELECT count(*) FROM triggered) AS t"
)
CLAIM = """
WITH candidates AS (
    SELECT id FROM runs
    WHERE state IN ('queued', 'leased') AND agent = ANY(%(agents)s)
      AND (state = 'queued' OR lease_until < now())
      AND attempt < %(max_attempts)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs AS r SET
    state = 'leased',
    attempt = r.attempt + 1,
    worker_id = %(worker)s,
    claimed_at = now(),
    lease_until = now() + make_interval(secs => %(lease)s),
    previous_worker = r.worker_id,
    previous_claimed_at = r.claimed_at
FROM candidates
WHERE r.id = candidates.id
RETURNING r.id, r.agent, r.artifact_ids, r.attempt, r.workflow, r.previous_worker,
    r.previous_claimed_at
"""
COMPLETE = (
    """
WITH done AS (
    -- 'finishing' while the agent's hooks after publishing still run (see finish()).
    UPDATE runs SET state = CASE WHEN %(finishing)s THEN 'finishing' ELSE 'done' END,
        lease_until = CASE WHEN %(finishing)s THEN lease_until END,
        finished_at = CASE WHEN %(finishing)s THEN NULL ELSE now() END
    WHERE id = %(run)s AND worker_id = %(worker)s AND attempt = %(attempt)s
      AND state = 'leased'
    RETURNING id
), outputs AS (
    INSERT INTO artifacts (id, type, payload, produced_by, correlation_id, tags, traceparent,
        created_at, visibility)
    SELECT a.id, a.type, a.payload, a.produced_by, a.correlation_id,
        ARRAY(SELECT jsonb_array_elements_text(a.tags)), a.traceparent, a.created_at,
        a.visibility
    FROM jsonb_to_recordset(%(artifacts)s::jsonb) AS a(id text, type text, payload jsonb,
        produced_by text, correlation_id text, tags jsonb, traceparent text,
        created_at timestamptz, visibility jsonb)
    WHERE EXISTS (SELECT 1 FROM done)
    ON CONFLICT (id) DO NOTHING
), """
    + ENQUEUE.format(guard="EXISTS (SELECT 1 FROM done)")
    + """, consumed AS (
    INSERT INTO consumptions (artifact_id, agent, run_id)
    SELECT input, %(agent)s, done.id FROM done, unnest(%(inputs)s::text[]) AS input
), notified AS (
    SELECT pg_notify(%(channel)s, %(kind)s) FROM done
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM notified)
"""
)
GIVE_UP = """
UPDATE runs SET state = 'failed', lease_until = NULL, finished_at = now(),
    error = format('abandoned %%s times: worker %%s stopped renewing its lease',
                   attempt, worker_id)
WHERE state = 'leased' AND lease_until < now() AND attempt >= %s
"""
ABANDONED_FINISHING = """
UPDATE runs SET state = 'failed', lease_until = NULL, finished_at = now(),
    error = format('worker %%s stopped during the hooks that run after publishing'
                   ' (the outputs are published)', worker_id)
WHERE state = 'finishing' AND lease_until < now()
"""
