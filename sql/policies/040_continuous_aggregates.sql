-- Bars of 5 minutes, 1 hour and 1 day, aggregated from the 1-minute candles: continuous aggregates,
-- so reading daily bars is a query on a few rows per symbol and day, not on every minute.
-- Created WITH NO DATA, so this file runs in one transaction like the others: re-applied when its
-- rendered text changes, it converges (IF NOT EXISTS; remove + add for each policy) or changes nothing.
-- The refresh policies fill the recent buckets; `qbctl db seed` refreshes all of history.
-- Real-time (materialized_only = false): the newest minutes, not yet materialized, are included.
CREATE MATERIALIZED VIEW IF NOT EXISTS market_data_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', time) AS time, symbol,
       first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,
       sum(volume) AS volume
FROM market_data
WHERE timeframe = '1m'
GROUP BY time_bucket(INTERVAL '5 minutes', time), symbol
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS market_data_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS time, symbol,
       first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,
       sum(volume) AS volume
FROM market_data
WHERE timeframe = '1m'
GROUP BY time_bucket(INTERVAL '1 hour', time), symbol
WITH NO DATA;

-- Daily bars are KRX trading days: buckets from midnight in Seoul.
CREATE MATERIALIZED VIEW IF NOT EXISTS market_data_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', time, 'Asia/Seoul') AS time, symbol,
       first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,
       sum(volume) AS volume
FROM market_data
WHERE timeframe = '1m'
GROUP BY time_bucket(INTERVAL '1 day', time, 'Asia/Seoul'), symbol
WITH NO DATA;

-- Refresh: each window ends one bucket back (the open bucket comes from the real-time part) and starts
-- a few days back, well inside market_data's retention, so a refresh never meets dropped raw data.
SELECT remove_continuous_aggregate_policy('market_data_5m', if_exists => true);
SELECT add_continuous_aggregate_policy('market_data_5m', start_offset => INTERVAL '1 day',
                                       end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '5 minutes');
SELECT remove_continuous_aggregate_policy('market_data_1h', if_exists => true);
SELECT add_continuous_aggregate_policy('market_data_1h', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
SELECT remove_continuous_aggregate_policy('market_data_1d', if_exists => true);
SELECT add_continuous_aggregate_policy('market_data_1d', start_offset => INTERVAL '5 days',
                                       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');

-- Compression (segmented by symbol, newest first) once a bar can no longer change: after 30 days,
-- beyond every refresh window (TimescaleDB requires that).
ALTER MATERIALIZED VIEW market_data_5m SET (timescaledb.compress = true, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'time DESC');
ALTER MATERIALIZED VIEW market_data_1h SET (timescaledb.compress = true, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'time DESC');
ALTER MATERIALIZED VIEW market_data_1d SET (timescaledb.compress = true, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'time DESC');
SELECT remove_compression_policy('market_data_5m', if_exists => true);
SELECT add_compression_policy('market_data_5m', compress_after => INTERVAL '30 days');
SELECT remove_compression_policy('market_data_1h', if_exists => true);
SELECT add_compression_policy('market_data_1h', compress_after => INTERVAL '30 days');
SELECT remove_compression_policy('market_data_1d', if_exists => true);
SELECT add_compression_policy('market_data_1d', compress_after => INTERVAL '30 days');

-- Retention: 5-minute bars as long as the 1-minute candles (DATA_RETENTION_DAYS); hourly bars 3 years
-- and daily bars 10 years, for backtests long after the minutes are gone.
SELECT remove_retention_policy('market_data_5m', if_exists => true);
SELECT add_retention_policy('market_data_5m', drop_after => INTERVAL '{{DATA_RETENTION_DAYS}} days');
SELECT remove_retention_policy('market_data_1h', if_exists => true);
SELECT add_retention_policy('market_data_1h', drop_after => INTERVAL '1095 days');
SELECT remove_retention_policy('market_data_1d', if_exists => true);
SELECT add_retention_policy('market_data_1d', drop_after => INTERVAL '3650 days');
