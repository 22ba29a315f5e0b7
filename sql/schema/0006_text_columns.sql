-- Text instead of varchar(n), as TimescaleDB advises: create_hypertable warns about every
-- `character varying` column (11 warnings on a new database's first migrate). On a new database this
-- file runs before sql/policies/010 makes the tables hypertables, so none of them warns.
-- The length limits stay, as CHECK constraints (text and varchar(n) compare, sort and index alike:
-- no index is rebuilt and no row rewritten).
-- On a database that already has hypertables (the VM): TimescaleDB changes no column type on a
-- hypertable with compressed chunks, so those chunks are decompressed here first and the compression
-- policy compresses them again on its next run (`qbctl db seed` runs it at once). A column that a
-- continuous aggregate reads (market_data's symbol and timeframe, read by the 5-minute, hourly and
-- daily bars) is left as it is: changing it means dropping the aggregates, whose hourly and daily bars
-- outlive the 1-minute candles they came from (DATA_RETENTION_DAYS), and a full refresh cannot run in a
-- migration's transaction. Such a table is already a hypertable, so it never warns again.
DO $$
DECLARE
    col record;
    chunk regclass;
    ts text := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n
                ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb');
BEGIN
    FOR col IN
        SELECT c.oid::regclass AS tbl, c.relname::text AS tname, a.attname::text AS cname,
               a.atttypmod - 4 AS len
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        WHERE c.oid IN ('market_data'::regclass, 'technical_indicators'::regclass, 'orders'::regclass,
                        'trades'::regclass, 'positions'::regclass, 'strategy_performance'::regclass,
                        'system_logs'::regclass)
          AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'pg_catalog.varchar'::regtype
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
                          WHERE d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.classid = 'pg_rewrite'::regclass)
        ORDER BY c.relname, a.attnum
    LOOP
        IF ts IS NOT NULL THEN
            FOR chunk IN EXECUTE format(
                'SELECT format(''%%I.%%I'', chunk_schema, chunk_name)::regclass FROM timescaledb_information.chunks'
                ' WHERE (hypertable_schema, hypertable_name) = (SELECT n.nspname::text, c.relname::text'
                ' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace'
                ' WHERE c.oid = %s) AND is_compressed', col.tbl::oid)
            LOOP
                EXECUTE format('SELECT %I.decompress_chunk(%L::regclass)', ts, chunk);
            END LOOP;
        END IF;
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE text', col.tbl, col.cname);
        IF col.len > 0 THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (pg_catalog.char_length(%I) <= %s)',
                           col.tbl, col.tname || '_' || col.cname || '_length', col.cname, col.len);
        END IF;
    END LOOP;
END
$$;
