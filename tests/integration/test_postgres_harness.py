"""The test PostgreSQL server is reachable and each session gets a private database (fails under CI=true)."""

import psycopg


def test_private_database_is_usable(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE probe (id int primary key)")
        conn.execute("INSERT INTO probe VALUES (1)")
        assert conn.execute("SELECT current_database(), count(*) FROM probe").fetchone()[1] == 1
        assert conn.execute("SELECT current_database()").fetchone()[0].startswith("marketpipe_test_")
