"""The raw SQL helpers, run on SQLite: one statement text whatever the number of values
(Pony keeps every text it ran for the life of the process)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from workers.sync.sql import in_list, json_rows


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    """An in-memory database with one table of mixed columns."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, x REAL)")
        yield db


def run(db: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``sql`` with Pony's ``$name`` parameters, run through sqlite3's ``:name``."""
    return db.execute(sql.replace("$", ":"), params).fetchall()


def test_a_list_is_one_parameter_and_the_text_does_not_depend_on_its_length() -> None:
    one, one_params = in_list("e", ["a"])
    many, many_params = in_list("e", ["a", "b", "c"])
    assert one == many == "(SELECT value FROM json_each($e))"
    assert (one_params, many_params) == ({"e": '["a"]'}, {"e": '["a", "b", "c"]'})
    assert json_rows("r", [(1, "a")])[0] == json_rows("r", [(1, "a"), (2, "b")])[0]


def test_in_list_matches_integers_and_strings_of_any_script(
    connection: sqlite3.Connection,
) -> None:
    rows = [(1, 10, "ann@example.com"), (2, 20, "zoë@exämple.de"), (3, 30, "李@例子.中国")]
    connection.executemany("INSERT INTO t (id, n, s) VALUES (?, ?, ?)", rows)
    listed, params = in_list("n", [10, 30, 99])
    assert run(connection, f"SELECT id FROM t WHERE n IN {listed} ORDER BY id", params) == [
        (1,),
        (3,),
    ]
    listed, params = in_list("s", ["zoë@exämple.de", "李@例子.中国", "nobody@example.com"])
    assert run(connection, f"SELECT id FROM t WHERE s IN {listed} ORDER BY id", params) == [
        (2,),
        (3,),
    ]
    listed, params = in_list("s", [])
    assert run(connection, f"SELECT id FROM t WHERE s IN {listed}", params) == []


def test_json_rows_insert_the_rows_in_order_with_their_types_and_take_an_upsert(
    connection: sqlite3.Connection,
) -> None:
    rows = [(5, 1, "zoë", 0.5), (2, None, "b", None), (9, 3, None, 2.0)]
    select, params = json_rows("r", rows)
    run(connection, f"INSERT INTO t (id, n, s, x) {select}", params)
    stored = connection.execute("SELECT id, n, s, x FROM t ORDER BY rowid").fetchall()
    assert stored == [(2, None, "b", None), (5, 1, "zoë", 0.5), (9, 3, None, 2.0)]
    types = connection.execute("SELECT typeof(n), typeof(s), typeof(x) FROM t WHERE id = 9")
    assert types.fetchone() == ("integer", "null", "real")
    select, params = json_rows("r", [(5, 7, "again", 0.0), (6, 8, "new", 0.0)])
    run(connection, f"INSERT INTO t (id, n, s, x) {select} ON CONFLICT (id) DO NOTHING", params)
    assert connection.execute("SELECT id, s FROM t WHERE id IN (5, 6) ORDER BY id").fetchall() == [
        (5, "zoë"),
        (6, "new"),
    ]


def test_json_rows_keep_the_order_of_the_rows(connection: sqlite3.Connection) -> None:
    connection.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT)")
    words = [f"w{k}" for k in range(300, 0, -1)]
    select, params = json_rows("r", [(w,) for w in words])
    run(connection, f"INSERT INTO log (s) {select}", params)
    assert [r[0] for r in connection.execute("SELECT s FROM log ORDER BY seq")] == words


def test_rows_of_different_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="widths"):
        json_rows("r", [(1, 2), (3,)])


def test_a_lone_surrogate_fails_to_bind_instead_of_being_stored_as_invalid_utf8(
    connection: sqlite3.Connection,
) -> None:
    listed, params = in_list("s", ["a\udc80b"])
    with pytest.raises(UnicodeEncodeError):
        run(connection, f"SELECT id FROM t WHERE s IN {listed}", params)
