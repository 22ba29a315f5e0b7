-- qbctl: requires timescaledb
-- The extension first: every hypertable and policy in sql/policies/ needs it.
CREATE EXTENSION IF NOT EXISTS timescaledb;
