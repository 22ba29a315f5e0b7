-- Hypertables, partitioned on time. Re-applied whenever this rendered text changes;
-- if_not_exists never compares the column or interval: `qbctl db verify` does.
SELECT create_hypertable('market_data', by_range('time', INTERVAL '1 day'), if_not_exists => true, migrate_data => true);
SELECT create_hypertable('technical_indicators', by_range('time', INTERVAL '1 day'), if_not_exists => true, migrate_data => true);
SELECT create_hypertable('trades', by_range('time', INTERVAL '7 days'), if_not_exists => true, migrate_data => true);
SELECT create_hypertable('strategy_performance', by_range('time', INTERVAL '30 days'), if_not_exists => true, migrate_data => true);
SELECT create_hypertable('system_logs', by_range('time', INTERVAL '1 day'), if_not_exists => true, migrate_data => true);
