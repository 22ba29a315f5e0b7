-- OHLCV candles per KRX symbol (e.g. 005930) and timeframe (1m, 5m, 1d, ...).
-- A hypertable on time (sql/policies/): its primary key includes the time column.
CREATE TABLE market_data (
    time        timestamptz   NOT NULL,
    symbol      varchar(12)   NOT NULL,
    timeframe   varchar(8)    NOT NULL DEFAULT '1m',
    open        numeric(14,2) NOT NULL,
    high        numeric(14,2) NOT NULL,
    low         numeric(14,2) NOT NULL,
    close       numeric(14,2) NOT NULL,
    volume      bigint        NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (symbol, timeframe, time)  -- serves "newest candles of one symbol and timeframe"
);
