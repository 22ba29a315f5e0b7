-- One value per indicator (rsi_14, macd, bb_upper_20, ...) per symbol, timeframe and time.
CREATE TABLE technical_indicators (
    time        timestamptz      NOT NULL,
    symbol      varchar(12)      NOT NULL,
    timeframe   varchar(8)       NOT NULL DEFAULT '1m',
    name        varchar(32)      NOT NULL,
    value       double precision NOT NULL,
    params      jsonb,
    PRIMARY KEY (symbol, timeframe, name, time)
);
