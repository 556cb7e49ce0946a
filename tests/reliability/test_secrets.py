"""Secrets: credentials never appear in logs, exceptions, reprs, CLI output, job records or files.

marketpipe runs with KNOWN secret values (S3 keys, PostgreSQL passwords, passwords in archive-mirror and
remote-Parquet URLs, passwords typed by mistake on the command line), on success and failure paths (wrong endpoint,
wrong bucket, unreachable database, wrong password against a scram-sha-256 server, typos, ``-v`` and DEBUG
logging); then everything it produced is scanned for every form of every secret (as written, percent-encoded,
wrapped by rich over several lines).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.config import Settings, redact_url
from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Granularity
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.supabase_client import SupabaseClient
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.secret_redaction import argument_secrets, scrub_text
from marketpipe.infrastructure.storage import ParquetStorageEngine
from marketpipe.infrastructure.storage.r2_client import R2Client
from marketpipe.infrastructure.storage.remote_parquet import S3Options, query_remote_parquet
from reliability.secret_scan import CliRun, SecretScan, capture_all_logs, check_runs, run_cli

S3_ACCESS_KEY_ID = "AKIAMPSECRETKEY7Q2X"
S3_SECRET_ACCESS_KEY = "mpS3cret/Access+Key=Zq8vWx3"  # AWS secret keys hold '/' and '+'
PG_PASSWORD = "pg-Pa55/w@rd#Qx7"  # needs percent-encoding in a URL
MIRROR_PASSWORD = "mirrorPa55-Kx9Lm"
REMOTE_PASSWORD = "remotePa55-Vb4Nq"
SCRAM_PASSWORD = "scramPa55-Rt6Yu"
WRONG_PASSWORD = "wrongPa55-Hj2Kl"
TYPO_PASSWORD = "typoPa55-Ws8Ed"
SECRETS = {
    "S3 access key id": S3_ACCESS_KEY_ID,
    "S3 secret access key": S3_SECRET_ACCESS_KEY,
    "PostgreSQL password": PG_PASSWORD,
    "mirror password": MIRROR_PASSWORD,
    "remote Parquet password": REMOTE_PASSWORD,
    "scram password": SCRAM_PASSWORD,
    "wrong password": WRONG_PASSWORD,
    "password typed by mistake": TYPO_PASSWORD,
}
MONTH = date(2024, 1, 1)
HIVE_FILE = "lake/frame=1h/symbol=BTCUSDT/date=2024-01-01/part.parquet"
REGION = "us-east-1"
INGEST = ["ingest", "binance", "-i", "1h", "--start", "2024-01-01", "--end", "2024-01-31", "--base-url"]
COUNT_SQL = "SELECT count(*) AS n FROM bars"


def with_password(url: str, user: str, password: str) -> str:
    """``url`` (``scheme://host...``) with ``user:password@`` (percent-encoded) in front of the host."""
    scheme, _, rest = url.partition("://")
    rest = rest.rpartition("@")[2]
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveServer]:
    """A Binance-layout mirror (BTCUSDT and ETHUSDT, 1h, January 2024) and one lake file (:data:`HIVE_FILE`, 24
    bars) served over loopback HTTP."""
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, ["BTCUSDT", "ETHUSDT"], ["1h"], MONTH, date(2024, 2, 1), seed=8)
    lake = tmp_path_factory.mktemp("remote-lake")
    ParquetStorageEngine(root=lake).write(
        random_walk_bars(MONTH, 24, interval="1h", seed=8), frame="1h", symbol="BTCUSDT", trading_day=MONTH, job_id="j"
    )
    (root / HIVE_FILE).parent.mkdir(parents=True)
    shutil.copy(next(lake.rglob("*.parquet")), root / HIVE_FILE)
    with ArchiveServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def scram_postgres() -> Iterator[str]:
    """URL (with the right password) of a throwaway PostgreSQL server that checks passwords (scram-sha-256).

    Skipped where the server binaries are missing or it cannot start; under CI=true that is a failure.
    """
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if not binaries or (as_postgres and shutil.which("runuser") is None):
        message = "no PostgreSQL server binaries (initdb) to start a scram-sha-256 server"
        pytest.fail(message) if in_ci() else pytest.skip(message)
    bin_dir = binaries[-1].parent
    workdir = Path(tempfile.mkdtemp(prefix="mp-scram-"))  # not below tmp_path: the postgres user must reach it
    data, port = workdir / "data", closed_port()
    (workdir / "pw").write_text(SCRAM_PASSWORD + "\n")
    if as_postgres:
        shutil.chown(workdir, "postgres", "postgres")
        shutil.chown(workdir / "pw", "postgres", "postgres")

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "mp", "--pwfile", str(workdir / "pw"), "-A",
            "scram-sha-256", "--no-sync")  # fmt: skip
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        message = f"cannot start a scram-sha-256 PostgreSQL server: {exc}"
        pytest.fail(message) if in_ci() else pytest.skip(message)
    try:
        yield with_password(f"postgresql://127.0.0.1:{port}/postgres", "mp", SCRAM_PASSWORD)
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pg_url(fresh_postgres_url: str) -> str:
    """A fresh database of the test server, its URL carrying the (percent-encoded) known password."""
    return with_password(fresh_postgres_url, "postgres", PG_PASSWORD)  # trust auth: any password connects


# ---------------------------------------------------------------------------------------------------- the scanner
def test_the_scanner_finds_every_form_of_a_secret(fault_report):
    """The scan is not vacuous: encoded forms, rich's wrapped panels and chained exceptions are all caught."""
    scan = SecretScan({"key": S3_SECRET_ACCESS_KEY})
    wrapped = f"│ ...{S3_SECRET_ACCESS_KEY[:9]}  │\n│ {S3_SECRET_ACCESS_KEY[9:]} │"
    try:
        try:
            raise OSError(f"GET http://u:{quote(S3_SECRET_ACCESS_KEY, safe='')}@h/")
        except OSError:
            raise MarketPipeError("clean message") from None
    except MarketPipeError as exc:
        chained = exc
    for surface, text in [
        ("raw", S3_SECRET_ACCESS_KEY),
        ("encoded", quote(S3_SECRET_ACCESS_KEY)),
        ("wrapped", wrapped),
    ]:
        scan.check(surface, text)
    scan.check_exception("suppressed context", chained)
    found = {leak.split(":", 1)[0] for leak in scan.leaks}
    missed = {"raw", "encoded", "wrapped", "suppressed context"} - found
    fault_report.record("secrets", "scanner self-check", runs=4, faults=4, violations=len(missed))
    assert missed == set()


# ---------------------------------------------------------------------------------------------------- the CLI
def cli_commands(
    mirror: ArchiveServer, pg_url: str, scram_url: str, bucket: str, moto: str, *, long: bool
) -> list[list[str]]:
    """Every command run twice (with and without ``-v``) after the ingests: successes and failures.

    The long run adds the failures that retry with backoff for seconds: an unreachable mirror and S3 endpoint.
    """
    remote = with_password(f"{mirror.base_url}/{HIVE_FILE}", "reader", REMOTE_PASSWORD)
    unreachable_remote = remote.replace(f":{mirror.base_url.rsplit(':', 1)[1]}/", f":{closed_port()}/")
    unreachable_pg = with_password(f"postgresql://127.0.0.1:{closed_port()}/db", "postgres", PG_PASSWORD)
    unencoded_slash = f"postgresql://postgres:{PG_PASSWORD.replace('@', '%40')}@127.0.0.1:5432/db"
    typo = f"postgresql://postgres:{TYPO_PASSWORD}@127.0.0.1:5432/db"
    commands = [
        ["--db-url", pg_url, "jobs"],
        ["jobs"],
        ["--db-url", pg_url, "hot", "status"],
        ["sync", "push", "--bucket", bucket, "--endpoint", moto],
        ["sync", "push", "--bucket", f"mp-missing-{uuid.uuid4().hex[:12]}", "--endpoint", moto],
        ["sync", "push", "--bucket", bucket, "--endpoint", mirror.base_url],  # the wrong endpoint: not S3
        ["sync", "pull", "--bucket", bucket, "--endpoint", with_password(moto, "s3", TYPO_PASSWORD)],
        ["query", "--remote", f"s3://{bucket}/lake/", "--endpoint", moto, COUNT_SQL],
        ["query", "--remote", "s3://mp-no-such-bucket-for-secrets/lake/", "--endpoint", moto, COUNT_SQL],
        ["query", "--remote", remote, COUNT_SQL],
        ["query", "--remote", remote.replace("part.parquet", "missing.parquet"), COUNT_SQL],
        ["query", "--remote", unreachable_remote, COUNT_SQL],
        ["--db-url", unreachable_pg, "jobs"],
        ["--db-url", unencoded_slash, "jobs"],
        ["--db-url", with_password(scram_url, "mp", WRONG_PASSWORD), "jobs"],
        ["--db-url", scram_url, "jobs"],
        [typo],
        ["jobs", typo],
        ["--db-url", typo, "jobz"],
        ["jobs", "--limit", typo],
        [f"--db-url=mysql://root:{TYPO_PASSWORD}@127.0.0.1/db", "jobs"],
        [*INGEST, f"ftp://u:{TYPO_PASSWORD}@127.0.0.1/", "BTCUSDT"],
    ]
    if long:
        dead_mirror = with_password(f"http://127.0.0.1:{closed_port()}", "mirror", MIRROR_PASSWORD)
        commands += [
            ["--db-url", pg_url, *INGEST, dead_mirror, "BTCUSDT"],
            ["sync", "push", "--bucket", bucket, "--endpoint", f"http://127.0.0.1:{closed_port()}"],
        ]
    return commands


def test_cli_runs_show_no_secret_in_output_logs_job_records_or_files(
    tmp_path, mirror, pg_url, scram_postgres, s3_bucket, moto_server, fault_report, reliability_scale
):
    """Ingest (PostgreSQL and SQLite state), jobs, sync, remote queries, hot status, bad databases and typos,
    with and without ``-v`` and with DEBUG logging; then scan output, logs, job tables and the data dir."""
    data = tmp_path / "data"
    env = {
        "MARKETPIPE_DATA_DIR": str(data),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
        "AWS_REGION": REGION,
        "MARKETPIPE_LOG_LEVEL": "DEBUG",
    }
    mirror_url = with_password(mirror.base_url, "mirror", MIRROR_PASSWORD)
    export = ["--export-csv", str(data / "exports" / "btc.csv.gz")]
    commands = cli_commands(
        mirror, pg_url, scram_postgres, s3_bucket.bucket_name, moto_server, long=reliability_scale.long
    )
    mirror.add_fault("data/spot/monthly/klines/ETHUSDT/*", Fault("status", times=-1, status=403))
    try:
        with capture_all_logs() as logs:
            runs = [run_cli(["-v", "--db-url", pg_url, *INGEST, mirror_url, "BTCUSDT", *export], env)]
            runs.append(run_cli([*INGEST, mirror_url, "ETHUSDT"], env))  # SQLite state; the archive is refused
            job_id = asyncio.run(first_job_id(pg_url))
            runs.append(run_cli(["--db-url", pg_url, "jobs", "--job", job_id], env))
            runs += [run_cli(verbose + args, env) for args in commands for verbose in ([], ["-v"])]
    finally:
        mirror.clear_faults()

    cli, log_scan, stored = SecretScan(SECRETS), SecretScan(SECRETS), SecretScan(SECRETS)
    check_runs(cli, runs)
    log_scan.check_all("log", logs.texts())
    stored.check_postgres(pg_url)
    stored.check_postgres(scram_postgres)
    stored.check_sqlite(data / "db" / "marketpipe.db")
    files = stored.check_files(data)
    note = f"{cli.texts_checked} texts"
    fault_report.record(
        "secrets", "cli: output, -v or not", runs=len(runs), faults=len(runs), violations=len(cli.leaks), note=note
    )
    fault_report.record(
        "secrets", "cli: DEBUG logs of all loggers", runs=logs.records, faults=len(runs), violations=len(log_scan.leaks)
    )
    fault_report.record(
        "secrets",
        "cli: job records, state dbs, files",
        runs=stored.texts_checked,
        faults=len(SECRETS),
        violations=len(stored.leaks),
        note=f"{files} files",
    )

    assert cli.leaks == [] and log_scan.leaks == [] and stored.leaks == []
    assert runs[0].exit_code == 0 and runs[1].exit_code == 1, runs[0].stderr + runs[1].stderr
    bucket = s3_bucket.bucket_name
    assert exit_codes(runs, "sync", "push", "--bucket", bucket, "--endpoint", moto_server) == {0}
    remote_query = [run for run in runs if run.args[-3:-1] == ("--remote", commands[9][2])]
    assert {run.exit_code for run in remote_query} == {0} and all("24" in run.stdout for run in remote_query)
    assert exit_codes(runs, "--db-url", scram_postgres, "jobs") == {0}  # the right password connects
    assert exit_codes(runs, "--db-url", commands[14][1], "jobs") == {1}  # the wrong one does not
    assert exit_codes(runs, commands[16][0]) == {2}  # a URL typed as a command is a usage error
    assert logs.records > 100 and files >= 4


def exit_codes(runs: list[CliRun], *args: str) -> set[int]:
    """Exit codes of the runs whose arguments end with ``args`` (with and without ``-v``)."""
    return {run.exit_code for run in runs if run.args[-len(args) :] == args}


async def first_job_id(url: str) -> str:
    """The id of the newest ingestion job recorded in the PostgreSQL database at ``url``."""
    with PostgresDatabase(url) as database:
        jobs = await SqlIngestionRepository(database).list_jobs(1)
    return jobs[0].job_id


# ---------------------------------------------------------------------------------------------------- the API
class ErrorCollector:
    """Runs calls that must fail with a typed marketpipe error (never a bare ValueError, KeyError or OSError) and
    keeps the errors for scanning."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def expect(self, call, expected: type[BaseException] = MarketPipeError) -> None:
        with pytest.raises(expected) as info:
            call()
        self.errors.append(info.value)


def test_api_objects_errors_and_logs_show_no_secret(
    tmp_path, mirror, pg_url, scram_postgres, moto_server, fault_report
):
    """Reprs of every object built with a secret, and every error (whole chain, traceback) of the failure paths."""
    scan, failing = SecretScan(SECRETS), ErrorCollector()
    with capture_all_logs() as logs:
        check_databases(scan, failing, pg_url, scram_postgres)
        check_object_storage(scan, failing, mirror, moto_server)
        check_remote_parquet(failing, mirror)
        check_archive_mirror(scan, failing, mirror, tmp_path)
    for error in failing.errors:
        scan.check_exception(f"error {type(error).__name__}", error)
    scan.check_all("log", logs.texts())
    scan.check_files(tmp_path)
    fault_report.record(
        "secrets",
        "api: reprs, error chains, logs",
        runs=scan.texts_checked,
        faults=len(failing.errors),
        violations=len(scan.leaks),
    )
    assert scan.leaks == []


def check_databases(scan: SecretScan, failing: ErrorCollector, pg_url: str, scram_url: str) -> None:
    settings = Settings.from_env({"MARKETPIPE_DB_URL": pg_url})
    scan.check_objects("settings", settings, settings.db_url, asdict(settings))
    scan.check("settings formatted", f"{settings.db_url} {settings.db_url:>10} {{}}".format(settings.db_url))
    database = PostgresDatabase(settings.db_url)
    assert database.schema_version() > 0  # the raw password still reaches libpq
    scan.check_objects("postgres", database, database.url, database.describe())
    database.close()
    without_password = scram_url.replace(f":{quote(SCRAM_PASSWORD, safe='')}@", "@")
    with SupabaseClient(without_password, SCRAM_PASSWORD) as client:  # the password given apart from the URL
        assert client.database.schema_version() > 0
        scan.check_objects("supabase", client, client.database)
    unreachable = with_password(f"postgresql://127.0.0.1:{closed_port()}/db", "u", PG_PASSWORD)
    failing.expect(lambda: PostgresDatabase(with_password(scram_url, "mp", WRONG_PASSWORD)).schema_version())
    failing.expect(lambda: PostgresDatabase(unreachable, connect_timeout=1).schema_version())
    failing.expect(lambda: PostgresDatabase(f"postgresql://postgres:{PG_PASSWORD.replace('@', '%40')}@127.0.0.1/db"))
    failing.expect(lambda: PostgresDatabase(f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1/db"))
    failing.expect(lambda: Settings.from_env({"MARKETPIPE_DB_URL": f"mysql://u:{PG_PASSWORD}@h/db"}))


def check_object_storage(scan: SecretScan, failing: ErrorCollector, mirror: ArchiveServer, moto: str) -> None:
    keys = {"access_key_id": S3_ACCESS_KEY_ID, "secret_access_key": S3_SECRET_ACCESS_KEY, "region_name": REGION}
    with R2Client(**keys, bucket_name="mp-missing-bucket-secrets", endpoint_url=moto) as r2:
        scan.check_objects("r2", r2, r2.endpoint_url)
        failing.expect(r2.list_objects)
        failing.expect(lambda: r2.head_object("k"))
    with R2Client(**keys, bucket_name="mp-endpoint-not-s3", endpoint_url=mirror.base_url, max_attempts=1) as r2:
        failing.expect(r2.list_objects)
    for endpoint in (with_password(moto, "s3", TYPO_PASSWORD), "http://[::1", f"ftp://k:{TYPO_PASSWORD}@h"):
        failing.expect(lambda endpoint=endpoint: R2Client(**keys, bucket_name="b-b-b", endpoint_url=endpoint))
    keys["region_name"] = "no such/region"
    failing.expect(lambda: R2Client(**keys, bucket_name="b-b-b", endpoint_url=moto))
    options = S3Options(
        endpoint_url=moto, region=REGION, access_key_id=S3_ACCESS_KEY_ID, secret_access_key=S3_SECRET_ACCESS_KEY
    )
    scan.check_objects("s3 options", options)
    failing.expect(lambda: query_remote_parquet("s3://mp-no-such-bucket-secrets/x.parquet", s3=options))
    failing.expect(lambda: S3Options(endpoint_url="http://[::1", access_key_id="a", secret_access_key="b"))


def check_remote_parquet(failing: ErrorCollector, mirror: ArchiveServer) -> None:
    remote = with_password(f"{mirror.base_url}/{HIVE_FILE}", "reader", REMOTE_PASSWORD)
    assert len(query_remote_parquet(remote, columns=["close"])) == 24
    missing = remote.replace("part.parquet", "missing.parquet")
    failing.expect(lambda: query_remote_parquet(missing))
    failing.expect(lambda: query_remote_parquet(missing.replace(mirror.base_url.rsplit(":", 1)[1], "1", 1)))
    failing.expect(lambda: query_remote_parquet(missing.replace("http://", "ftp://")))


def check_archive_mirror(scan: SecretScan, failing: ErrorCollector, mirror: ArchiveServer, tmp_path: Path) -> None:
    archive = ArchiveFile.of("spot", "ETHUSDT", "1h", Granularity.MONTHLY, MONTH)
    quick = {"cache_dir": tmp_path / "cache", "backoff": 0.01, "max_attempts": 2}
    mirror.add_fault("data/spot/monthly/klines/ETHUSDT/*", Fault("status", times=-1, status=403))
    try:
        with BinanceDataClient(with_password(mirror.base_url, "mirror", MIRROR_PASSWORD), **quick) as client:
            scan.check_objects("binance client", client, client.source_key)
            failing.expect(lambda: client.read_archive(archive))
    finally:
        mirror.clear_faults()
    unreachable = with_password(f"http://127.0.0.1:{closed_port()}", "mirror", MIRROR_PASSWORD)
    with BinanceDataClient(unreachable, **quick) as client:
        failing.expect(lambda: client.read_archive(archive))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"ftp://AKIA1:{TYPO_PASSWORD}@host/x", "ftp://***@host/x"),
        (f"s3://AKIA1:{TYPO_PASSWORD}@bucket/key", "s3://***@bucket/key"),
        (f"foo://AKIA1:{TYPO_PASSWORD}@h", "foo://***@h"),
        ("s3://AKIAONLY@bucket/key", "s3://***@bucket/key"),
        (f"HTTPS://user:{TYPO_PASSWORD}@h/p?sig=1", "HTTPS://user:***@h/p?sig=***"),
        (f"postgresql://u:{PG_PASSWORD}@h:1/db", "postgresql://u:***@h:1/db"),
    ],
)
def test_redact_url_hides_keys_used_as_user_names(url, shown, fault_report):
    """In ``s3://AK:SK@bucket``, ``ftp://`` and unknown schemes the user part is a key too: all of it is hidden."""
    redacted = redact_url(url)
    leaked = int(TYPO_PASSWORD in redacted or PG_PASSWORD in redacted or "AKIA" in redacted)
    fault_report.record("secrets", "redact_url: schemes", runs=1, faults=1, violations=leaked)
    assert redacted == shown


def test_postgres_password_with_an_unencoded_slash_is_refused_without_echoing_it(fault_report):
    """libpq would end the host at the '/' and quote the password's tail as the database name in its errors."""
    with pytest.raises(InvalidInputError, match="percent-encode it as %2F") as info:
        PostgresDatabase("postgresql://postgres:pass/word-tail@127.0.0.1:5432/postgres")
    leaked = int(any(part in text for part in ("pass/", "word-tail") for text in (str(info.value), repr(info.value))))
    fault_report.record("secrets", "postgres: unencoded '/' in password", runs=1, faults=1, violations=leaked)
    assert leaked == 0


# Passwords of any printable characters but whitespace; the "~Qz" tail keeps them from matching the rest of a URL
# by chance (a password "postgres" would be "shown" by the user name).
passwords = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=5, max_size=24).map(
    lambda text: text + "~Qz"
)


@given(password=passwords, scheme=st.sampled_from(["postgresql", "https", "s3", "ftp", "x-custom"]))
def test_any_password_is_hidden_by_redaction_and_cli_scrubbing(password, scheme, fault_report):
    """Whatever a password holds (``@ / ? # % :``), raw or percent-encoded, redaction and the CLI's usage-error
    scrubbing hide it."""
    shown = []
    for written in (password, quote(password, safe="")):
        url = f"{scheme}://user1:{written}@host.example:5432/db"
        shown += [redact_url(url), scrub_text(f"No such command '{url}'.", argument_secrets([url]))]
    leaked = sum(password in text or quote(password, safe="") in text for text in shown)
    fault_report.record(
        "secrets", "fuzz: redaction of random passwords", runs=len(shown), faults=len(shown), violations=leaked
    )
    assert leaked == 0, shown


@given(password=passwords)
@example(password="0000%800~Qz")  # percent-decodes to bytes that are not UTF-8: psycopg raised UnicodeDecodeError
def test_any_postgres_password_is_accepted_or_refused_without_being_shown(password, fault_report):
    """A PostgreSQL URL with any password, encoded or not: the database is built (and shows it redacted) or
    refused with an InvalidInputError that does not show it."""
    texts = []
    for written in (password, quote(password, safe="")):
        try:
            database = PostgresDatabase(f"postgresql://postgres:{written}@127.0.0.1:5432/db")
        except InvalidInputError as exc:
            texts += [str(exc), repr(exc)]
        else:
            texts += [repr(database), database.url, database.describe()]
    leaked = sum(password in text or quote(password, safe="") in text for text in texts)
    fault_report.record("secrets", "fuzz: postgres url random passwords", runs=2, faults=2, violations=leaked)
    assert leaked == 0, texts


def test_binance_client_refuses_a_non_http_mirror_without_echoing_its_password():
    with pytest.raises(InvalidInputError) as info:
        BinanceDataClient(f"ftp://mirror:{MIRROR_PASSWORD}@127.0.0.1/")
    assert MIRROR_PASSWORD not in str(info.value)
