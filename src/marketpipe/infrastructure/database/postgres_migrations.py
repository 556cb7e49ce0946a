"""Versioned schema of the PostgreSQL database. Append new migrations; never edit an applied one.

Versions match the SQLite schema's (same tables, PostgreSQL types): 1 domain tables, 2 ingestion records,
3 hot store. Timestamps are ``timestamptz``; prices and volumes ``double precision`` (the same IEEE doubles as the
Parquet lake, so a bar moved between tiers round-trips bit for bit, and arithmetic stays fast; ``numeric`` would
convert every value to ``Decimal``). Bar times of the seed 000 tables stay ``bigint`` nanoseconds, as in SQLite.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "domain tables: aggregates, bars, checkpoints",
        """
        CREATE TABLE symbol_bars_aggregates (
            symbol text NOT NULL,
            trading_date date NOT NULL,
            interval text NOT NULL DEFAULT '1m',
            version integer NOT NULL DEFAULT 1,
            is_complete boolean NOT NULL DEFAULT false,
            collection_started boolean NOT NULL DEFAULT false,
            bar_count integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, trading_date, interval)
        );
        CREATE TABLE ohlcv_bars (
            symbol text NOT NULL,
            interval text NOT NULL DEFAULT '1m',
            timestamp_ns bigint NOT NULL,
            open_price double precision NOT NULL,
            high_price double precision NOT NULL,
            low_price double precision NOT NULL,
            close_price double precision NOT NULL,
            volume double precision NOT NULL,
            trade_count bigint,
            quote_volume double precision,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval, timestamp_ns)
        );
        CREATE TABLE checkpoints (
            scope text NOT NULL DEFAULT 'default',
            symbol text NOT NULL,
            checkpoint_data jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, symbol)
        );
        """,
    ),
    (
        2,
        "ingestion jobs and per-archive checkpoints",
        """
        CREATE TABLE ingestion_jobs (
            job_id text PRIMARY KEY,
            source text NOT NULL,
            status text NOT NULL,
            request jsonb NOT NULL,
            counts jsonb NOT NULL DEFAULT '{}',
            errors jsonb NOT NULL DEFAULT '[]',
            pid integer,
            hostname text,
            started_at timestamptz DEFAULT now(),
            finished_at timestamptz
        );
        CREATE INDEX ingestion_jobs_started ON ingestion_jobs (started_at);
        CREATE TABLE ingestion_checkpoints (
            source text NOT NULL,
            market text NOT NULL,
            symbol text NOT NULL,
            interval text NOT NULL,
            period text NOT NULL,
            status text NOT NULL,
            sha256 text,
            rows bigint NOT NULL DEFAULT 0,
            job_id text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source, market, symbol, interval, period)
        );
        """,
    ),
    (
        3,
        "hot store: recent bars and regime classifications",
        """
        CREATE TABLE market_data (
            symbol text NOT NULL,
            interval text NOT NULL,
            timestamp timestamptz NOT NULL,
            open double precision NOT NULL,
            high double precision NOT NULL,
            low double precision NOT NULL,
            close double precision NOT NULL,
            volume double precision NOT NULL,
            trade_count bigint,
            quote_volume double precision,
            taker_buy_base_volume double precision,
            taker_buy_quote_volume double precision,
            vwap double precision,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval, timestamp)
        );
        CREATE TABLE regime_classifications (
            symbol text NOT NULL,
            interval text NOT NULL,
            timestamp timestamptz NOT NULL,
            regime integer NOT NULL,
            probabilities jsonb NOT NULL,
            features jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval, timestamp)
        );
        """,
    ),
    (
        4,
        "hot store keeps the lake's close time",
        "ALTER TABLE market_data ADD COLUMN close_time_ns bigint",
    ),
    (
        5,
        "aggregate tombstones: a deleted aggregate keeps its version, so versions are never reused",
        "ALTER TABLE symbol_bars_aggregates ADD COLUMN deleted boolean NOT NULL DEFAULT false",
    ),
    (
        6,
        "aggregate version and bar_count as bigint (SQLite integers are 64-bit already)",
        "ALTER TABLE symbol_bars_aggregates ALTER COLUMN version TYPE bigint, ALTER COLUMN bar_count TYPE bigint",
    ),
    (
        7,
        "keeping current: the source of every stored day, scheduler runs claimed once, leases",
        """
        CREATE TABLE series_days (
            symbol text NOT NULL,
            interval text NOT NULL,
            day text NOT NULL,
            source text NOT NULL,
            bars bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval, day)
        );
        CREATE TABLE schedule_runs (
            job text NOT NULL,
            due_ms bigint NOT NULL,
            owner text NOT NULL,
            status text NOT NULL,
            started_ms bigint NOT NULL,
            finished_ms bigint,
            error text,
            PRIMARY KEY (job, due_ms)
        );
        CREATE TABLE leases (
            name text PRIMARY KEY,
            owner text NOT NULL,
            expires_ms bigint NOT NULL
        );
        """,
    ),
]
