-- Periodic snapshots of each strategy's results.
CREATE TABLE strategy_performance (
    time          timestamptz   NOT NULL,
    strategy      varchar(64)   NOT NULL,
    equity        numeric(16,2) NOT NULL,
    pnl           numeric(16,2) NOT NULL,
    return_pct    numeric(9,4)  NOT NULL,
    max_drawdown  numeric(9,4)  NOT NULL,
    win_rate      numeric(5,4),
    trade_count   integer       NOT NULL DEFAULT 0,
    PRIMARY KEY (strategy, time)
);

-- The backend's structured log; kept for LOG_RETENTION_DAYS.
CREATE TABLE system_logs (
    time        timestamptz  NOT NULL,
    level       varchar(8)   NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    logger      varchar(64)  NOT NULL,
    message     text         NOT NULL,
    context     jsonb
);
CREATE INDEX system_logs_level_time_idx ON system_logs (level, time DESC);  -- logs by level and time
