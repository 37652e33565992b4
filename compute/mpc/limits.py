"""Hard limits every node enforces on a joint query, checked before any MPC starts."""

from __future__ import annotations

MAX_SQL_CHARS = 8_192
MAX_NAME_CHARS = 64
MAX_TABLES = 8
MAX_COLUMNS = 256  # declared columns of one table
MAX_AGGREGATES = 32
MAX_GROUPS = 64  # declared categories of a group-by column
MAX_CATEGORIES = 256  # declared categories of any category column
MAX_BINS = 64  # histogram bins
MAX_EXPR_NODES = 64  # nodes of one value expression or one WHERE clause
MAX_DEPTH = 16  # nesting of expressions, predicates and parentheses
MAX_PARTS = 64  # provider parts of one query
MAX_ROWS = 1 << 24  # rows of the joined table
MAX_ABS_VALUE = float(1 << 40)  # declared ranges must lie within +-2^40
QUANTILE_DENOMINATOR = 1_000_000  # quantile levels are multiples of 1e-6
