"""Key normalization, canonical multi-column encoding and duplicate handling.

Rules (the same on every side of every protocol):

1. Each key column is normalized on its own: Unicode NFC, then leading and trailing
   whitespace (`str.isspace`) removed, then, with `CaseRule.CASEFOLD`, full Unicode case
   folding followed by NFC again. NFKC is not applied: full-width and ASCII digits differ.
2. A key is empty when any of its columns is empty after normalization; `EmptyKeyRule`
   says whether such a row is an error or is dropped (a dropped row never matches).
3. The columns are joined by length prefixes: u16 column count, then per column a u32
   big-endian byte length and the UTF-8 bytes. Distinct column tuples give distinct
   encodings, whatever characters (commas, NULs, newlines) the columns hold.
4. The 32-byte BLAKE2b digest of that encoding (personalized "datum-psi-key") is the item
   the protocols work on; two different keys collide with probability about n^2 / 2^257.
5. Rows sharing a normalized key follow `DuplicateRule` (see spec.py); each distinct key
   is sent to the protocol once.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from compute.errors import SpecError
from compute.psi.spec import CaseRule, DuplicateRule, EmptyKeyRule, KeyRules

_KEY_PERSON = b"datum-psi-key"
_COUNT_AND_LENGTH = struct.Struct(">HI")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Table:
    """Rows of string cells under named columns (what a party feeds to PSI)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(set(self.columns)) != len(self.columns):
            raise SpecError("column names must be unique")
        width = len(self.columns)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise SpecError(f"row {i} has {len(row)} cells, expected {width}")

    def column_index(self, name: str) -> int:
        """Position of a column, or SpecError when it is absent."""
        try:
            return self.columns.index(name)
        except ValueError:
            raise SpecError(f"no column named {name!r}") from None


@dataclass(frozen=True)
class KeyedRows:
    """A table indexed by normalized key: each distinct key once, with its rows.

    `digests[i]` is the protocol item of key i; `row_groups[i]` the rows carrying it, in
    input order (one row under REJECT and FIRST). `dropped_rows` had an empty key.
    """

    encodings: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    row_groups: tuple[tuple[int, ...], ...]
    dropped_rows: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.digests)

    def rows_for(self, key_positions: Sequence[int]) -> tuple[int, ...]:
        """Row indices (sorted) of the given key positions."""
        return tuple(sorted(r for k in key_positions for r in self.row_groups[k]))


def normalize_value(value: str, case: CaseRule) -> str:
    """Normalize one key column: NFC, trim, and optional full case folding."""
    text = unicodedata.normalize("NFC", value).strip()
    if case is CaseRule.CASEFOLD:
        text = unicodedata.normalize("NFC", text.casefold())
    return text


def encode_key(parts: Sequence[str]) -> bytes:
    """Length-prefixed UTF-8 encoding of normalized key columns (injective)."""
    if not 1 <= len(parts) <= 0xFFFF:
        raise SpecError("a key has 1..65535 columns")
    chunks = [struct.pack(">H", len(parts))]
    for part in parts:
        try:
            raw = part.encode("utf-8")
        except UnicodeEncodeError:
            raise SpecError("key holds a character that is not valid Unicode text") from None
        chunks.append(struct.pack(">I", len(raw)))
        chunks.append(raw)
    return b"".join(chunks)


def key_digest(encoding: bytes) -> bytes:
    """The 32-byte protocol item of a canonical key encoding."""
    return hashlib.blake2b(encoding, digest_size=32, person=_KEY_PERSON).digest()


def index_keys(table: Table, key_columns: Sequence[str], rules: KeyRules) -> KeyedRows:
    """Normalize, encode and deduplicate the keys of a table per `rules`.

    Works column by column (C-level maps over the whole column, no per-row Python calls
    for normalization); an input that breaks a rule (empty key under `reject`, duplicate
    under `reject`, text that is not valid Unicode) is re-run row by row so the error
    names the same first offending row as the row-wise definition `index_keys_rowwise`.
    """
    if not key_columns:
        raise SpecError("name at least one key column")
    positions = [table.column_index(c) for c in key_columns]
    fast = _index_columns(table.rows, positions, rules)
    return fast if fast is not None else index_keys_rowwise(table, key_columns, rules)


def index_keys_rowwise(table: Table, key_columns: Sequence[str], rules: KeyRules) -> KeyedRows:
    """The row-by-row definition of `index_keys` (same result; used for its error messages)."""
    if not key_columns:
        raise SpecError("name at least one key column")
    positions = [table.column_index(c) for c in key_columns]
    first_seen: dict[bytes, int] = {}
    encodings: list[bytes] = []
    groups: list[list[int]] = []
    dropped: list[int] = []
    for row_index, row in enumerate(table.rows):
        parts = [normalize_value(row[p], rules.case) for p in positions]
        if any(part == "" for part in parts):
            if rules.empty is EmptyKeyRule.REJECT:
                raise SpecError(f"row {row_index} has an empty key")
            dropped.append(row_index)
            continue
        encoding = encode_key(parts)
        seen = first_seen.get(encoding)
        if seen is None:
            first_seen[encoding] = len(encodings)
            encodings.append(encoding)
            groups.append([row_index])
        elif rules.duplicates is DuplicateRule.REJECT:
            raise SpecError(f"row {row_index} repeats the key of row {groups[seen][0]}")
        elif rules.duplicates is DuplicateRule.ALL:
            groups[seen].append(row_index)
    return KeyedRows(
        encodings=tuple(encodings),
        digests=key_digests(encodings),
        row_groups=tuple(tuple(g) for g in groups),
        dropped_rows=tuple(dropped),
    )


def normalize_column(values: Sequence[str], case: CaseRule) -> list[str]:
    """`normalize_value` over a whole column (same result, C-level maps)."""
    nfc = functools.partial(unicodedata.normalize, "NFC")
    text = list(map(str.strip, map(nfc, values)))
    if case is CaseRule.CASEFOLD:
        text = list(map(nfc, map(str.casefold, text)))
    return text


def key_digests(encodings: Sequence[bytes]) -> tuple[bytes, ...]:
    """`key_digest` of every encoding (one keyed BLAKE2b state, copied per key)."""
    base = hashlib.blake2b(digest_size=32, person=_KEY_PERSON)
    out: list[bytes] = []
    append, fresh = out.append, base.copy
    for encoding in encodings:
        state = fresh()
        state.update(encoding)
        append(state.digest())
    return tuple(out)


def _index_columns(
    rows: Sequence[tuple[str, ...]], positions: Sequence[int], rules: KeyRules
) -> KeyedRows | None:
    """Column-wise `index_keys`; None when the input breaks a rule (the row-wise pass reports it)."""
    if len(positions) > 0xFFFF:
        return None
    columns = [normalize_column(list(map(operator.itemgetter(p), rows)), rules.case) for p in positions]
    kept: Sequence[int] = range(len(rows))
    empty = {i for column in columns if "" in column for i, v in enumerate(column) if v == ""}
    if empty:
        if rules.empty is EmptyKeyRule.REJECT:
            return None
        kept = [i for i in range(len(rows)) if i not in empty]
        columns = [[column[i] for i in kept] for column in columns]
    try:
        encodings = _encode_columns(columns)
    except UnicodeEncodeError:
        return None
    dropped = tuple(sorted(empty))
    if len(set(encodings)) == len(encodings):
        return KeyedRows(tuple(encodings), key_digests(encodings), tuple(zip(kept)), dropped)
    if rules.duplicates is DuplicateRule.REJECT:
        return None
    first_seen: dict[bytes, int] = {}
    groups: list[list[int]] = []
    keep_all = rules.duplicates is DuplicateRule.ALL
    for row_index, encoding in zip(kept, encodings, strict=True):
        seen = first_seen.setdefault(encoding, len(groups))
        if seen == len(groups):
            groups.append([row_index])
        elif keep_all:
            groups[seen].append(row_index)
    distinct = list(first_seen)
    return KeyedRows(tuple(distinct), key_digests(distinct), tuple(tuple(g) for g in groups), dropped)


def _encode_columns(columns: Sequence[Sequence[str]]) -> list[bytes]:
    """`encode_key` of every row of normalized columns (raises UnicodeEncodeError on surrogates)."""
    count = len(columns)
    head = _COUNT_AND_LENGTH.pack
    raw = [list(map(str.encode, column)) for column in columns]
    if count == 1:
        return [head(1, len(b)) + b for b in raw[0]]
    first = [head(count, len(b)) + b for b in raw[0]]
    rest = [[_LENGTH.pack(len(b)) + b for b in column] for column in raw[1:]]
    return [b"".join(cells) for cells in zip(first, *rest, strict=True)]
