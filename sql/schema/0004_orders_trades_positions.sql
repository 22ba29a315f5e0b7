-- Financial records: kept forever (no retention policy on any of these).
CREATE TABLE orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now(),
    symbol           varchar(12)   NOT NULL,
    side             varchar(4)    NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       varchar(8)    NOT NULL CHECK (order_type IN ('market', 'limit')),
    quantity         bigint        NOT NULL CHECK (quantity > 0),
    price            numeric(14,2) CHECK (price > 0),  -- NULL for market orders
    status           varchar(16)   NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'submitted', 'partially_filled', 'filled', 'cancelled', 'rejected')),
    strategy         varchar(64)   NOT NULL,
    broker_order_id  varchar(32)   -- the KIS order number once submitted
);
CREATE INDEX orders_open_idx ON orders (status, created_at DESC) WHERE status IN ('pending', 'submitted', 'partially_filled');
CREATE INDEX orders_strategy_idx ON orders (strategy, created_at DESC);

-- Executions (fills). A hypertable on time: the primary key includes it.
CREATE TABLE trades (
    time        timestamptz   NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    order_id    bigint        REFERENCES orders (id),
    symbol      varchar(12)   NOT NULL,
    side        varchar(4)    NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity    bigint        NOT NULL CHECK (quantity > 0),
    price       numeric(14,2) NOT NULL CHECK (price > 0),
    fee         numeric(14,2) NOT NULL DEFAULT 0,
    strategy    varchar(64)   NOT NULL,
    PRIMARY KEY (id, time)
);
CREATE INDEX trades_strategy_time_idx ON trades (strategy, time DESC);  -- trades by strategy and time

CREATE TABLE positions (
    strategy       varchar(64)   NOT NULL,
    symbol         varchar(12)   NOT NULL,
    quantity       bigint        NOT NULL,
    avg_price      numeric(14,2) NOT NULL,
    realized_pnl   numeric(16,2) NOT NULL DEFAULT 0,
    opened_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, symbol)
);
