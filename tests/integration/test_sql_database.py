"""SqlDatabase behaviour both backends must share: recovery from dropped connections, URL handling, bounds,
lock ordering, and job documents that only one backend could store."""

import asyncio
import math
import threading
from datetime import UTC, date, datetime

import psycopg
import pytest

from marketpipe.domain import OHLCVBar, RepositoryError, Symbol, TimeRange
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.ingestion import IngestionJob
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.repositories import SqlCheckpointRepository, SqlIngestionRepository, SqlOHLCVRepository

T0 = datetime_to_ns(date(2024, 1, 2))
MINUTE = 60 * 10**9


def bars(count, *, reverse=False):
    made = [OHLCVBar(Symbol("AAPL"), T0 + i * MINUTE, 10.0, 11.0, 9.0, 10.5, 1.0 + i) for i in range(count)]
    return made[::-1] if reverse else made


def test_connections_the_server_dropped_are_replaced_not_failed(fresh_postgres_url):
    database = PostgresDatabase(fresh_postgres_url, pool_size=4)
    checkpoints = SqlCheckpointRepository(database)

    async def warm_up():
        await asyncio.gather(*(checkpoints.list_checkpoints() for _ in range(8)))

    asyncio.run(warm_up())
    name = fresh_postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(fresh_postgres_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()[0]
    assert killed >= 1
    for _ in range(6):  # a restart/failover/idle-kill must not fail the next calls
        assert asyncio.run(checkpoints.list_checkpoints()) == {}
    database.close()


def test_url_options_win_over_defaults_and_bad_urls_never_show_the_password(fresh_postgres_url):
    database = PostgresDatabase(f"{fresh_postgres_url}?application_name=my-worker")
    with database.transaction(readonly=True) as session:
        assert session.fetch_one("SELECT current_setting('application_name')") == ("my-worker",)
    database.close()
    with pytest.raises(InvalidInputError) as info:
        PostgresDatabase("postgresql://u:S3cr%zzt@127.0.0.1/db")
    assert "S3cr" not in str(info.value) and "percent-encode" in str(info.value)
    with pytest.raises(InvalidInputError) as info:  # libpq would read "PW-tail@127.0.0.1" as the host
        PostgresDatabase("postgresql://u:S3cr3t@PW-tail@127.0.0.1:5432/db")
    assert "S3cr" not in str(info.value) and "PW-tail" not in str(info.value) and "%40" in str(info.value)
    unreachable = PostgresDatabase("postgresql://u:S3cr%2Ft@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(RepositoryError) as info:
        unreachable.schema_version()
    assert "S3cr" not in str(info.value) and "S3cr" not in repr(unreachable)


def test_opposite_order_overlapping_bar_upserts_do_not_deadlock(sql_database):
    repository = SqlOHLCVRepository(sql_database)
    errors = []

    def write(reverse):
        try:
            for _ in range(3):
                asyncio.run(repository.save_bars(bars(2000, reverse=reverse)))
        except RepositoryError as exc:  # "deadlock detected" before rows were sorted
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(reverse,)) for reverse in (False, True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert asyncio.run(repository.count_bars(Symbol("AAPL"))) == 2000


def test_far_future_ranges_mean_no_end_on_both_backends(sql_database):
    repository = SqlOHLCVRepository(sql_database)
    asyncio.run(repository.save_bars(bars(5)))
    forever = TimeRange(date(1900, 1, 1), date(2400, 1, 1))  # past int64 nanoseconds

    async def read():
        return [bar async for bar in repository.get_bars_for_symbol(Symbol("AAPL"), forever)]

    assert len(asyncio.run(read())) == 5
    assert asyncio.run(repository.delete_bars(Symbol("AAPL"), forever)) == 5


def test_job_documents_behave_the_same_on_both_backends(sql_database):
    repository = SqlIngestionRepository(sql_database)
    naive = datetime(2024, 3, 10, 12, 0)  # naive means UTC, whatever the local time zone
    asyncio.run(repository.save_job(IngestionJob(job_id="j1", source="binance", request={}, started_at=naive)))
    job = asyncio.run(repository.get_job("j1"))
    assert job.started_at == naive.replace(tzinfo=UTC)
    with pytest.raises(RepositoryError, match="not valid JSON"):
        asyncio.run(repository.save_job(IngestionJob(job_id="j2", source="binance", request={"x": math.nan})))
    assert asyncio.run(repository.get_job("j2")) is None


def test_a_stale_writer_cannot_overwrite_a_deleted_and_recreated_aggregate(sql_database):
    from marketpipe.domain import ConcurrencyError, SymbolBarsAggregate
    from marketpipe.infrastructure.repositories import SqlSymbolBarsRepository

    repository = SqlSymbolBarsRepository(sql_database)
    day = date(2024, 1, 2)

    async def scenario():
        first = SymbolBarsAggregate(Symbol("AAPL"), day)
        await repository.save(first)
        await repository.save(first)  # version 2
        stale = await repository.get_by_symbol_and_date(Symbol("AAPL"), day)
        assert await repository.delete(Symbol("AAPL"), day)
        assert await repository.get_by_symbol_and_date(Symbol("AAPL"), day) is None
        assert not await repository.delete(Symbol("AAPL"), day)
        again = SymbolBarsAggregate(Symbol("AAPL"), day)
        await repository.save(again)  # created anew: its version continues past the old one's
        await repository.save(again)
        with pytest.raises(ConcurrencyError):
            await repository.save(stale)  # held version 2 of the deleted aggregate
        assert (await repository.get_by_symbol_and_date(Symbol("AAPL"), day)).version == again.version
        with pytest.raises(ConcurrencyError):
            await repository.save(SymbolBarsAggregate(Symbol("AAPL"), day))  # a live row exists

    asyncio.run(scenario())


def test_big_bar_counts_fit_and_resaved_jobs_take_the_new_process(sql_database, tmp_path):
    from marketpipe.domain import SymbolBarsAggregate
    from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
    from marketpipe.infrastructure.repositories import SqlSymbolBarsRepository

    async def scenario():
        aggregate = SymbolBarsAggregate.restore(  # integer on PostgreSQL would overflow; bigint since migration 6
            "AAPL", date(2024, 1, 2), "1m", version=0, is_complete=False, collection_started=True, bar_count=2**40
        )
        await SqlSymbolBarsRepository(sql_database).save(aggregate)
        stored = await SqlSymbolBarsRepository(sql_database).get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 2))
        assert stored.bar_count == 2**40
        jobs = SqlIngestionRepository(sql_database)
        await jobs.save_job(IngestionJob(job_id="j", source="binance", request={}, pid=1, hostname="a"))
        await jobs.save_job(IngestionJob(job_id="j", source="binance", request={"resumed": True}, pid=2, hostname="b"))
        job = await jobs.get_job("j")
        assert (job.pid, job.hostname, job.request) == (2, "b", {"resumed": True})

    asyncio.run(scenario())
    assert SqliteDatabase(f"sqlite:///{tmp_path / 'x.db'}").path == tmp_path / "x.db"  # a URL names the same file
