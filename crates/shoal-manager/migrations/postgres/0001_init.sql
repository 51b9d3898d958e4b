-- shoal manager schema (PostgreSQL). Keep in step with ../sqlite/0001_init.sql: only id columns
-- and the blob type differ. Times are unix milliseconds; flags are 0/1 integers.
CREATE TABLE scheduler_clusters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bio TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    client_config TEXT NOT NULL DEFAULT '{}',
    seed_client_config TEXT NOT NULL DEFAULT '{}',
    is_default BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
INSERT INTO scheduler_clusters (id, name, bio, is_default, created_ms, updated_ms)
    VALUES (1, 'default', 'default scheduler cluster', 1, 0, 0);

CREATE TABLE schedulers (
    id BIGSERIAL PRIMARY KEY,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    port BIGINT NOT NULL,
    idc TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    cluster_id BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'inactive',
    last_seen_ms BIGINT NOT NULL DEFAULT 0,
    features TEXT NOT NULL DEFAULT '[]',
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (hostname, ip, cluster_id)
);

CREATE TABLE seed_peers (
    id BIGSERIAL PRIMARY KEY,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    port BIGINT NOT NULL,
    download_port BIGINT NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT 'super',
    idc TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    cluster_id BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'inactive',
    last_seen_ms BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (hostname, ip, cluster_id)
);

CREATE TABLE applications (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL DEFAULT '{}',
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE personal_access_tokens (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    args TEXT NOT NULL,
    sealed_credentials BYTEA,
    cluster_ids TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, id);

CREATE TABLE job_items (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    url TEXT NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (job_id, seq)
);

-- The default cluster was inserted with an explicit id; move the sequence past it.
SELECT setval(pg_get_serial_sequence('scheduler_clusters', 'id'), 1);
