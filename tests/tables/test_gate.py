"""The SQL gate's first wall: what it lets through, how it rewrites it, and what it refuses."""

from __future__ import annotations

import pytest

from tables.errors import QueryRejected
from tables.gate import TableRef, column_name, parse_query

HOSTILE = [
    "delete from iris",
    "DROP TABLE iris",
    "insert into iris select * from iris",
    "update iris set species = 'x'",
    "truncate table iris",
    "select * from iris; delete from iris",
    "select 1; select 2",
    "with x as (delete from iris returning *) select * from x",
    "with x as (insert into iris values (1) returning *) select * from x",
    "select * into stolen from iris",
    "select * from iris for update",
    "select pg_read_file('/etc/passwd')",
    "select pg_sleep(100)",
    "select lo_import('/etc/passwd')",
    "select * from dblink('host=evil', 'select 1') as t(a int)",
    "select load_extension('/tmp/evil.so')",
    "select readfile('/etc/passwd')",
    "select set_config('role', 'postgres', false)",
    "select nextval('seq')",
    "select query_to_xml('delete from iris', true, true, '')",
    "select * from generate_series(1, 1000000000)",
    "select * from pg_catalog.pg_authid.x",
    "select :secret from iris",
    "select * from iris where species = ?",
    "copy iris to '/tmp/x'",
    "grant select on iris to public",
    "set role postgres",
    "begin",
    "attach database '/etc/passwd' as x",
    "pragma writable_schema = 1",
    "select evil_function(1) from iris",
    "select rownum, species from iris",
    "",
    "   ",
    "select * from",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_refuses_anything_but_one_read_only_query(sql):
    with pytest.raises(QueryRejected):
        parse_query(sql, "ALICE")


def test_refuses_overlong_queries():
    with pytest.raises(QueryRejected, match="longer than"):
        parse_query("select 1 from dual where 1 = 1" + " and 1 = 1" * 20_000, "ALICE")


def test_unquoted_names_fold_to_upper_case_and_tables_get_their_owner():
    g = parse_query('select species, "petal_width" from iris', "ALICE")
    assert g.tables == (TableRef("ALICE", "IRIS"),)
    assert g.sql("postgres") == 'SELECT "SPECIES", "petal_width" FROM "ALICE"."IRIS"'


def test_other_owners_tables_are_kept_qualified():
    g = parse_query("select * from bob.sales s join iris i on s.id = i.id", "ALICE")
    assert g.tables == (TableRef("BOB", "SALES"), TableRef("ALICE", "IRIS"))


def test_cte_names_are_not_tables():
    g = parse_query("with q as (select * from iris) select count(*) from q", "ALICE")
    assert g.tables == (TableRef("ALICE", "IRIS"),)


def test_dual_becomes_no_table_at_all():
    g = parse_query("select 1 as one from dual", "ALICE")
    assert g.tables == ()
    assert g.sql("sqlite") == 'SELECT 1 AS "ONE"'


@pytest.mark.parametrize(
    ("sql", "limit"),
    [
        ("select * from iris where rownum <= 5", "LIMIT 5"),
        ("select * from iris where rownum < 5", "LIMIT 4"),
        ("select * from iris where 10 > rownum and species = 'x'", "LIMIT 9"),
    ],
)
def test_rownum_filters_become_limits(sql, limit):
    out = parse_query(sql, "ALICE").sql("postgres")
    assert out.endswith(limit) and "ROWNUM" not in out


def test_oracle_functions_are_translated():
    out = parse_query(
        "select nvl(species, 'none') s, decode(x, 1, 'a', 'b') d from iris fetch first 3 rows only", "ALICE"
    ).sql("sqlite")
    assert "COALESCE" in out and "CASE" in out and "LIMIT 3" in out


def test_ordered_by_wraps_the_query():
    g = parse_query("select * from iris", "ALICE").ordered_by(["SPECIES", "x"])
    assert g.sql("postgres") == 'SELECT * FROM (SELECT * FROM "ALICE"."IRIS") AS "PYQD_Q" ORDER BY "SPECIES", "x"'


@pytest.mark.parametrize(("text", "name"), [("species", "SPECIES"), (' "Mixed" ', "Mixed"), ("A_B$1", "A_B$1")])
def test_column_names_follow_oracle_rules(text, name):
    assert column_name(text) == name


@pytest.mark.parametrize("text", ["a b", "x;drop", '"a"b"', ""])
def test_bad_column_names_are_refused(text):
    with pytest.raises(QueryRejected):
        column_name(text)


def test_subqueries_in_from_get_an_alias_for_postgresql():
    out = parse_query("select count(*) from (select * from iris)", "ALICE").sql("postgres")
    assert out == 'SELECT COUNT(*) FROM (SELECT * FROM "ALICE"."IRIS") AS "PYQD_S0"'


@pytest.mark.parametrize(
    "sql",
    [
        "select " + "(" * 5000 + "1" + ")" * 5000 + " from dual",
        "select " + "(" * 40 + "1" + ")" * 40 + " from dual",
        "select 1 from dual where " + " and ".join(["(1 = 1"] * 3000) + ")" * 3000,
        "select " + "not " * 5000 + "1 from dual",
    ],
)
def test_deep_nesting_is_refused_cleanly(sql):
    with pytest.raises(QueryRejected, match="nest"):
        parse_query(sql, "ALICE")


def test_moderate_nesting_and_strings_with_parentheses_pass():
    parse_query("select " + "(" * 20 + "1" + ")" * 20 + " from dual", "ALICE")
    parse_query("select '" + "(" * 100 + "' from dual", "ALICE")


@pytest.mark.parametrize(
    "sql",
    [
        "select printf('%.*c', 2000000000, 'x') from dual",
        "select printf('%*d', 2000000000, 1) from dual",
        "select printf('%2000000000d', 1) from dual",
        "select format('%1$2000000000s', 'x') from dual",
        "select printf(species, 1) from iris",
        "select '" + "x" * 4001 + "' from dual",
    ],
)
def test_functions_whose_cost_an_argument_sets_are_bounded(sql):
    with pytest.raises(QueryRejected):
        parse_query(sql, "ALICE")


def test_small_printf_formats_pass():
    parse_query("select printf('%5.2f|%-10s|%%|%d', 1.5, 'a', 2) from dual", "ALICE")


@pytest.mark.parametrize(
    ("sql", "plain"),
    [
        ("select * from iris", True),
        ("select species, petal_width w from iris where petal_width > 1 and species in ('a', 'b')", True),
        ('select "SPECIES" from iris where species is not null limit 10', True),
        ("select * from iris where petal_width between 1 and 2 or not species = 'x'", True),
        ('select "NOPE" from iris', False),  # unknown: could read as a string literal on ADBC
        ("select upper(species) from iris", False),
        ("select petal_width * 2 from iris", False),
        ("select printf('%5d', 1) from iris", False),
        ("select * from iris where species like '%a%'", False),
        ("select * from iris where length(species) > 1", False),
        ("select distinct species from iris", False),
        ("select species from iris order by species desc", True),
        ("select species from iris order by upper(species)", False),
        ("select species, count(*) from iris group by species", False),
        ("select a.species from iris a, iris b", False),
        ("select * from iris where species in (select species from iris)", False),
        ("with x as (select * from iris) select * from x", False),
    ],
)
def test_only_plain_scans_may_take_the_uninterruptible_reader(sql, plain):
    gated = parse_query(sql, "ALICE")
    columns = {ref: frozenset({"SPECIES", "PETAL_WIDTH"}) for ref in gated.tables}
    assert gated.with_columns(columns).plain_scan_of("ALICE") is plain
    assert not gated.with_columns(columns).plain_scan_of("BOB")


def test_group_apply_and_query_wrappers_keep_a_plain_scan_plain():
    gated = parse_query("select species, petal_width w from iris where petal_width > 1", "ALICE")
    gated = gated.with_columns({ref: frozenset({"SPECIES", "PETAL_WIDTH"}) for ref in gated.tables})
    assert gated.ordered_by(["SPECIES", "W"]).plain_scan_of("ALICE")
    assert gated.ordered_by(["SPECIES"]).limited(5).plain_scan_of("ALICE")
    assert not gated.ordered_by(["NOPE"]).plain_scan_of("ALICE")
    computed = parse_query("select upper(species) s from iris", "ALICE")
    computed = computed.with_columns({ref: frozenset({"SPECIES"}) for ref in computed.tables})
    assert not computed.ordered_by(["S"]).plain_scan_of("ALICE")


def test_oracle_recursive_subquery_factoring_becomes_with_recursive():
    sql = "with c(x) as (select 1 from dual union all select x + 1 from c where x < 5) select max(x) from c"
    assert parse_query(sql, "ALICE").sql("postgres").startswith("WITH RECURSIVE")
    assert (
        not parse_query("with c(x) as (select 1 from dual) select x from c", "ALICE")
        .sql("postgres")
        .startswith("WITH RECURSIVE")
    )


@pytest.mark.parametrize(
    "sql",
    [
        "select length(repeat('x', 900000000)) from t",
        "select repeat('x', a) from t",
        "select lpad(b, 900000000, 'x') from t",
        "select rpad(b, a * 1000) from t",
    ],
)
def test_values_of_any_size_in_one_call_are_refused(sql):
    with pytest.raises(QueryRejected, match="literal length"):
        parse_query(sql, "ALICE")


def test_small_repeats_and_pads_pass():
    parse_query("select repeat('ab', 3), lpad(b, 10, '0'), rpad(b, 4000) from t", "ALICE")
