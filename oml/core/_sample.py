"""`split` and `KFold`: deterministic, hash-based sampling in SQL that SQLite and PostgreSQL compute alike.

Oracle hashes rows with ORA_HASH, which neither SQLite nor PostgreSQL has. Here each row gets a bucket in
[0, 65536) from arithmetic on its values that is exact, or IEEE-identical, on every backend:

- a number v (a Boolean as 0/1) gives the term FLOOR(CAST(v AS DOUBLE) * c + s), c odd;
- a string gives one such term for its length and one for each of its first STRING_CHARS characters, the character
  standing for its position in printable ASCII (INSTR; other characters count as 0);
- bytes give their length; dates and timestamps are not hashed;
- c and s are integers drawn from the seed and the column's position, and a missing value gives 0 (or `nvl`);
- the terms are summed (T) and the bucket is (T * 40503 + s0) mod 65536, the modulo as x - 65536 * FLOOR(x / 65536).

Only integer constants, +, -, *, division by a power of two and FLOOR are used, on binary doubles (IEEE
arithmetic, exact while the values stay below 2**53), so both backends give the same bucket for the same values.
Numbers that differ by less than about 1e-5 may share a term. Rows with equal hash columns fall in the same set,
as with Oracle's hash_cols. With use_hash=False the occurrence number of a row among identical rows is hashed too,
so duplicates spread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from oml.core._sql import HIDDEN, Rel, as_double, as_number, col, lit, paren, unique_name

if TYPE_CHECKING:
    from oml.core.frame import DataFrame

#: Buckets a row can fall in.
BUCKETS = 65536
#: Leading characters of a string that are hashed.
STRING_CHARS = 8
#: The characters whose position stands for them in the string hash (printable ASCII).
ALPHABET = "".join(chr(c) for c in range(32, 127))
#: An odd multiplier: x -> x * MIX mod 2**16 mixes the sum's low bits.
MIX = 40503


def split(
    frame: DataFrame, ratio: Any, hash_cols: Any, seed: int, strata_cols: Any, use_hash: bool, nvl: Any
) -> list[DataFrame]:
    """len(ratio) proxies over disjoint sets of frame's rows, in those proportions."""
    ratios = [float(r) for r in (ratio if isinstance(ratio, list | tuple) else [ratio])]
    if not ratios or any(r <= 0 for r in ratios) or sum(ratios) > 1 + 1e-9:
        raise ValueError("ratio must be positive fractions summing to at most 1")
    bounds, total = [0], 0.0
    for r in ratios:
        total += r
        bounds.append(min(BUCKETS, round(total * BUCKETS)))
    rel, bucket = _bucketed(frame, hash_cols, seed, use_hash, nvl)
    if strata_cols is not None:
        rel, position, count = _ranked(frame, rel, bucket, strata_cols)
        # the row at rank r (from 1) of n stands at (r - 1/2) / n: compared in integers, 2 n bucket bounds
        twice = exp.Sub(this=exp.Mul(this=lit(2), expression=position), expression=lit(1))
        place = exp.Mul(this=paren(twice), expression=lit(BUCKETS))
        scale = exp.Mul(this=lit(2), expression=count)

        def cond(lo: int, hi: int) -> exp.Expr:
            low = exp.GTE(this=place.copy(), expression=exp.Mul(this=scale.copy(), expression=lit(lo)))
            high = exp.LT(this=place.copy(), expression=exp.Mul(this=scale.copy(), expression=lit(hi)))
            return exp.And(this=low, expression=high)

    else:

        def cond(lo: int, hi: int) -> exp.Expr:
            low = exp.GTE(this=bucket.copy(), expression=lit(lo))
            return exp.And(this=low, expression=exp.LT(this=bucket.copy(), expression=lit(hi)))

    return [frame._derive(rel.filter(cond(lo, hi))) for lo, hi in zip(bounds, bounds[1:], strict=False)]


def kfold(frame: DataFrame, n_splits: int, seed: int, hash_cols: Any, nvl: Any) -> list[tuple[DataFrame, DataFrame]]:
    """n_splits (train, test) pairs: fold i's test set is the rows of bucket range i."""
    n_splits = int(n_splits)
    if n_splits < 2:
        raise ValueError("n_splits must be at least 2")
    rel, bucket = _bucketed(frame, hash_cols, seed, True, nvl)
    folds = []
    for i in range(n_splits):
        # fold of a bucket b: FLOOR(b * n / BUCKETS), exact in binary doubles
        scaled = exp.Mul(this=bucket.copy(), expression=lit(n_splits))
        fold = exp.Floor(this=exp.Div(this=scaled, expression=lit(BUCKETS)))
        test = exp.EQ(this=fold, expression=lit(i))
        train = exp.NEQ(this=fold.copy(), expression=lit(i))
        folds.append((frame._derive(rel.filter(train)), frame._derive(rel.filter(test))))
    return folds


def _bucketed(frame: DataFrame, hash_cols: Any, seed: int, use_hash: bool, nvl: Any) -> tuple[Rel, exp.Expr]:
    """frame's rows with a hidden bucket column, and the expression that reads it."""
    rel = frame._rel.wrap() if frame._rel.limit is not None else frame._rel
    names = frame._names(_listed(hash_cols)) if hash_cols else rel.columns
    values = [(rel.expr(n), rel.kind(n), _nvl_for(n, rel.kind(n), nvl)) for n in names]
    if not use_hash:
        everything = [e.copy() for _, e, _ in rel.items]
        occurrence = exp.Window(
            this=exp.RowNumber(),
            partition_by=everything,
            order=exp.Order(expressions=[exp.Ordered(this=e.copy(), nulls_first=False) for e in everything]),
        )
        name = unique_name(HIDDEN + "dup", rel.columns)
        rel = rel.wrap([(name, occurrence)])
        values = [(rel.expr(n), rel.kind(n), _nvl_for(n, rel.kind(n), nvl)) for n in rel.columns]
        values.append((col(name), "number", None))
    bucket = _bucket(values, int(seed))
    name = unique_name(HIDDEN + "b", rel.columns)
    rel = rel.wrap([(name, bucket)])
    return rel, col(name)


def _ranked(frame: DataFrame, rel: Rel, bucket: exp.Expr, strata_cols: Any) -> tuple[Rel, exp.Expr, exp.Expr]:
    """rel with each row's rank by bucket within its stratum, and the stratum's size."""
    names = frame._names(_listed(strata_cols))
    partition = [rel.expr(n).copy() for n in names]
    order = exp.Order(expressions=[exp.Ordered(this=bucket.copy(), nulls_first=False)])
    rank = exp.Window(this=exp.RowNumber(), partition_by=partition, order=order)
    size = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[p.copy() for p in partition])
    rn, cnt = unique_name(HIDDEN + "r", rel.columns), unique_name(HIDDEN + "n", rel.columns)
    out = rel.wrap([(rn, rank), (cnt, size)])
    return out, col(rn), col(cnt)


def _listed(spec: Any) -> list[Any]:
    return list(spec) if isinstance(spec, list | tuple) else [spec]


def _nvl_for(name: str, kind: str, nvl: Any) -> Any:
    value = nvl.get(name) if isinstance(nvl, dict) else nvl
    if value is None:
        return None
    if kind == "string" and isinstance(value, str):
        return value
    if kind in ("number", "boolean") and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(nvl, dict):
        raise ValueError(f"nvl for {name!r} does not fit its type")
    return None


def _bucket(values: list[tuple[exp.Expr, str, Any]], seed: int) -> exp.Expr:
    rng = _Constants(seed)
    terms: list[exp.Expr] = []
    for value, kind, nvl in values:
        v = value.copy() if nvl is None else exp.Coalesce(this=value.copy(), expressions=[lit(nvl)])
        if kind in ("number", "boolean"):
            terms.append(_term(as_number(v, kind), rng))
        elif kind == "string":
            terms.append(_term(exp.Length(this=v.copy()), rng))
            for i in range(1, STRING_CHARS + 1):
                char = exp.Substring(this=v.copy(), start=lit(i), length=lit(1))
                terms.append(_term(exp.StrPosition(this=lit(ALPHABET), substr=char), rng))
        elif kind == "bytes":
            terms.append(_term(exp.Length(this=v.copy()), rng))
    total = _balanced_sum(terms) if terms else lit(0)
    x = exp.Add(this=exp.Mul(this=paren(total), expression=lit(MIX)), expression=lit(rng.below(BUCKETS)))
    # x mod BUCKETS, exact: x is an integer below 2**53 and BUCKETS a power of two
    whole = exp.Floor(this=exp.Div(this=as_double(paren(x)), expression=lit(BUCKETS)))
    return exp.Sub(this=paren(x.copy()), expression=exp.Mul(this=lit(BUCKETS), expression=whole))


def _term(number: exp.Expr, rng: _Constants) -> exp.Expr:
    """FLOOR(v * c + s) for an odd c, 0 for a missing value."""
    c, s = 2 * rng.below(BUCKETS // 2) + 1, rng.below(BUCKETS)
    scaled = exp.Add(this=exp.Mul(this=as_double(number), expression=lit(c)), expression=lit(s))
    return exp.Coalesce(this=exp.Floor(this=scaled), expressions=[lit(0)])


def _balanced_sum(terms: list[exp.Expr]) -> exp.Expr:
    """t1 + t2 + ... as a balanced tree: the parentheses nest log2(n) deep, not n."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return exp.Add(this=paren(_balanced_sum(terms[:mid])), expression=paren(_balanced_sum(terms[mid:])))


class _Constants:
    """The hash's integer constants, drawn from the seed by a fixed linear congruential generator (the same
    constants in every Python version)."""

    def __init__(self, seed: int) -> None:
        self._state = int(seed) & 0x7FFFFFFF

    def below(self, n: int) -> int:
        self._state = (self._state * 1_103_515_245 + 12_345) & 0x7FFFFFFF
        return (self._state >> 8) % n
