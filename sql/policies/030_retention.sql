-- Retention: market data and indicators for DATA_RETENTION_DAYS, logs for LOG_RETENTION_DAYS.
-- Orders, trades, positions and performance are financial records: no retention.
SELECT remove_retention_policy('market_data', if_exists => true);
SELECT add_retention_policy('market_data', drop_after => INTERVAL '{{DATA_RETENTION_DAYS}} days');
SELECT remove_retention_policy('technical_indicators', if_exists => true);
SELECT add_retention_policy('technical_indicators', drop_after => INTERVAL '{{DATA_RETENTION_DAYS}} days');
SELECT remove_retention_policy('system_logs', if_exists => true);
SELECT add_retention_policy('system_logs', drop_after => INTERVAL '{{LOG_RETENTION_DAYS}} days');
