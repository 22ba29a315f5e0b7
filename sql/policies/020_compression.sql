-- Compression: chunks older than COMPRESSION_AFTER_DAYS, segmented by symbol, newest first. Every
-- column of a table's unique key is in segmentby or orderby, as TimescaleDB advises (it warns otherwise);
-- a change here applies to chunks compressed from then on (compressed chunks keep their settings).
-- remove + add (not add ... if_not_exists, which ignores changed arguments): exactly one job each.
ALTER TABLE market_data SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol, timeframe', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE technical_indicators SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol, timeframe, name', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'time DESC, id DESC');
ALTER TABLE system_logs SET (timescaledb.compress, timescaledb.compress_segmentby = 'level', timescaledb.compress_orderby = 'time DESC');

SELECT remove_compression_policy('market_data', if_exists => true);
SELECT add_compression_policy('market_data', compress_after => INTERVAL '{{COMPRESSION_AFTER_DAYS}} days');
SELECT remove_compression_policy('technical_indicators', if_exists => true);
SELECT add_compression_policy('technical_indicators', compress_after => INTERVAL '{{COMPRESSION_AFTER_DAYS}} days');
SELECT remove_compression_policy('trades', if_exists => true);
SELECT add_compression_policy('trades', compress_after => INTERVAL '{{COMPRESSION_AFTER_DAYS}} days');
SELECT remove_compression_policy('system_logs', if_exists => true);
SELECT add_compression_policy('system_logs', compress_after => INTERVAL '{{COMPRESSION_AFTER_DAYS}} days');
