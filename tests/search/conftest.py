"""Fixtures of the search tests: a small demo data set, and studies on SQLite or on a PostgreSQL server.

The PostgreSQL tests need a server: `.ci/run` starts a throwaway one and exports AUTOML_TEST_POSTGRES_URL (a
superuser's URL: each test gets a database of its own) and AUTOML_TEST_POSTGRES_CTL (pg_ctl for that server, to
stop and restart it). Without them the tests skip, unless AUTOML_REQUIRE_POSTGRES=1 (as in CI) makes them fail.
By hand: `source .ci/postgres.sh && start_test_postgres`, then pytest in the same shell.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from automl.data.demo import write_demo_data
from tests.search.helpers import SQLITE, Storage


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("search") / "demo", people=16, seed=5, eval_people=0)


@dataclass
class PostgresServer:
    url: str  # a superuser's, on the maintenance database
    ctl: list[str] | None  # pg_ctl for the server, if the test may stop and start it

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}"')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._pg_ctl("start")

    def _pg_ctl(self, *args: str) -> None:
        if self.ctl is None:
            pytest.skip("AUTOML_TEST_POSTGRES_CTL is not set: this test stops and starts the server")
        subprocess.run([*self.ctl, *args], check=True, capture_output=True, timeout=90)

    def _execute(self, statement: str) -> None:
        engine = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(statement))
        finally:
            engine.dispose()


def _unavailable(reason: str) -> None:
    if os.environ.get("AUTOML_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"AUTOML_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    url = os.environ.get("AUTOML_TEST_POSTGRES_URL")
    if not url:
        _unavailable(
            "AUTOML_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server (.ci/run starts one; by hand: "
            "source .ci/postgres.sh && start_test_postgres)"
        )
    ctl = os.environ.get("AUTOML_TEST_POSTGRES_CTL")
    server = PostgresServer(url, shlex.split(ctl) if ctl else None)
    try:
        server._execute("SELECT 1")
    except Exception as error:  # no driver, no server
        _unavailable(f"cannot reach the PostgreSQL server of AUTOML_TEST_POSTGRES_URL: {type(error).__name__}")
    return server


@pytest.fixture
def postgres_storage(postgres: PostgresServer) -> Iterator[Storage]:
    url = postgres.create_database()
    try:
        yield Storage("postgresql", url)
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """The default embedded storage, then a PostgreSQL database shared by the test's processes."""
    return SQLITE if request.param == "sqlite" else request.getfixturevalue("postgres_storage")
