"""Versioned schema of the SQLite database (state + hot store). Append new migrations; never edit an applied one.

Migrations create their tables without ``IF NOT EXISTS``: a database holding same-named tables of another
schema (seed 000's original ``ohlcv_bars``, say) fails loudly instead of being marked migrated.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "domain tables: aggregates, bars, checkpoints",
        """
        CREATE TABLE symbol_bars_aggregates (
            symbol TEXT NOT NULL,
            trading_date TEXT NOT NULL,
            interval TEXT NOT NULL DEFAULT '1m',
            version INTEGER NOT NULL DEFAULT 1,
            is_complete BOOLEAN NOT NULL DEFAULT FALSE,
            collection_started BOOLEAN NOT NULL DEFAULT FALSE,
            bar_count INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (symbol, trading_date, interval)
        );
        CREATE TABLE ohlcv_bars (
            symbol TEXT NOT NULL,
            interval TEXT NOT NULL DEFAULT '1m',
            timestamp_ns INTEGER NOT NULL,
            open_price REAL NOT NULL,
            high_price REAL NOT NULL,
            low_price REAL NOT NULL,
            close_price REAL NOT NULL,
            volume REAL NOT NULL,
            trade_count INTEGER,
            quote_volume REAL,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (symbol, interval, timestamp_ns)
        ) WITHOUT ROWID;
        CREATE TABLE checkpoints (
            scope TEXT NOT NULL DEFAULT 'default',
            symbol TEXT NOT NULL,
            checkpoint_data TEXT NOT NULL,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (scope, symbol)
        );
        """,
    ),
]

MIGRATIONS.append(
    (
        2,
        "ingestion jobs and per-archive checkpoints",
        """
        CREATE TABLE ingestion_jobs (
            job_id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            status TEXT NOT NULL,
            request TEXT NOT NULL,
            counts TEXT NOT NULL DEFAULT '{}',
            errors TEXT NOT NULL DEFAULT '[]',
            pid INTEGER,
            hostname TEXT,
            started_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            finished_at TIMESTAMP
        );
        CREATE INDEX ingestion_jobs_started ON ingestion_jobs (started_at);
        CREATE TABLE ingestion_checkpoints (
            source TEXT NOT NULL,
            market TEXT NOT NULL,
            symbol TEXT NOT NULL,
            interval TEXT NOT NULL,
            period TEXT NOT NULL,
            status TEXT NOT NULL,
            sha256 TEXT,
            rows INTEGER NOT NULL DEFAULT 0,
            job_id TEXT,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (source, market, symbol, interval, period)
        );
        """,
    )
)

MIGRATIONS.append(
    (
        3,
        "hot store: recent bars and regime classifications",
        """
        CREATE TABLE market_data (
            symbol TEXT NOT NULL,
            interval TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            open REAL NOT NULL,
            high REAL NOT NULL,
            low REAL NOT NULL,
            close REAL NOT NULL,
            volume REAL NOT NULL,
            trade_count INTEGER,
            quote_volume REAL,
            taker_buy_base_volume REAL,
            taker_buy_quote_volume REAL,
            vwap REAL,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (symbol, interval, timestamp)
        ) WITHOUT ROWID;
        CREATE TABLE regime_classifications (
            symbol TEXT NOT NULL,
            interval TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            regime INTEGER NOT NULL,
            probabilities TEXT NOT NULL,
            features TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (symbol, interval, timestamp)
        ) WITHOUT ROWID;
        """,
    )
)

MIGRATIONS.append(
    (
        4,
        "hot store keeps the lake's close time",
        "ALTER TABLE market_data ADD COLUMN close_time_ns INTEGER",
    )
)

MIGRATIONS.append(
    (
        5,
        "aggregate tombstones: a deleted aggregate keeps its version, so versions are never reused",
        "ALTER TABLE symbol_bars_aggregates ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE",
    )
)


# Version 6 widens two PostgreSQL columns to bigint; SQLite integers are already 64-bit, so nothing changes here
# (the no-op keeps both schemas at the same version number).
MIGRATIONS.append((6, "aggregate version and bar_count as 64-bit integers (already so in SQLite)", "SELECT 1"))

MIGRATIONS.append(
    (
        7,
        "keeping current: the source of every stored day, scheduler runs claimed once, leases",
        """
        CREATE TABLE series_days (
            symbol TEXT NOT NULL,
            interval TEXT NOT NULL,
            day TEXT NOT NULL,
            source TEXT NOT NULL,
            bars INTEGER NOT NULL DEFAULT 0,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (symbol, interval, day)
        ) WITHOUT ROWID;
        CREATE TABLE schedule_runs (
            job TEXT NOT NULL,
            due_ms INTEGER NOT NULL,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            started_ms INTEGER NOT NULL,
            finished_ms INTEGER,
            error TEXT,
            PRIMARY KEY (job, due_ms)
        ) WITHOUT ROWID;
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    )
)
