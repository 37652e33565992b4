"""Typed specs for PSI and labeled PSI tasks.

Every privacy-relevant choice is a required field: who receives the output, whether rows or
only the intersection size are revealed, how keys are normalized, what happens to empty and
duplicate keys. Both parties must run with equal specs; the engines check this with a
handshake over the link before any key material is exchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum

from compute.errors import SpecError
from compute.psi.he_params import HeParams


class Protocol(StrEnum):
    """Two-party PSI protocols behind `run_psi`."""

    RR22 = "rr22"
    KKRT = "kkrt"
    ECDH = "ecdh"
    HE = "he"


class LabeledAlgorithm(StrEnum):
    """Labeled PSI algorithms behind `run_labeled`."""

    DH = "dh"
    HE = "he"


class Role(StrEnum):
    """The two sides of labeled PSI."""

    REQUESTER = "requester"
    PROVIDER = "provider"


class Reveal(StrEnum):
    """What the receiver(s) learn: their own matching rows, or only the intersection size."""

    ROWS = "rows"
    SIZE = "size"


class CaseRule(StrEnum):
    """Case handling after trimming and NFC: keep as is, or Unicode full case folding."""

    EXACT = "exact"
    CASEFOLD = "casefold"


class EmptyKeyRule(StrEnum):
    """A row whose key has an empty column (after normalization) is an error, or is dropped."""

    REJECT = "reject"
    DROP = "drop"


class DuplicateRule(StrEnum):
    """Rows sharing a normalized key.

    REJECT: error. FIRST: keep the first row (input order), drop the later ones.
    ALL: keep every row; the key is sent once and every row with it is returned on a match
    (plain PSI only: a labeled provider must use REJECT or FIRST so each key has one label).
    """

    REJECT = "reject"
    FIRST = "first"
    ALL = "all"


@dataclass(frozen=True)
class KeyRules:
    """Normalization applied to every key column on both sides (trim and NFC always apply)."""

    case: CaseRule
    empty: EmptyKeyRule
    duplicates: DuplicateRule


@dataclass(frozen=True)
class PsiSpec:
    """A two-party PSI task; parties are ranks 0 and 1, `receivers` names who gets output."""

    protocol: Protocol
    reveal: Reveal
    receivers: tuple[int, ...]
    key_rules: KeyRules
    he: HeParams | None = None

    def __post_init__(self) -> None:
        if not self.receivers or any(r not in (0, 1) for r in self.receivers):
            raise SpecError("receivers must be a non-empty subset of ranks (0, 1)")
        if tuple(sorted(set(self.receivers))) != self.receivers:
            raise SpecError("receivers must be sorted and unique")
        if self.reveal is Reveal.SIZE and self.protocol is not Protocol.ECDH:
            raise SpecError(
                "reveal=size is served by the DH cardinality protocol: use protocol=ecdh "
                "(rr22, kkrt and he reveal the intersecting elements to the receiver)"
            )
        if self.protocol is Protocol.HE and self.he is None:
            raise SpecError("protocol=he needs HeParams")

    def digest(self) -> bytes:
        """A canonical hash of the spec; both parties must agree on it."""
        return _canonical_digest(asdict(self))


@dataclass(frozen=True)
class LabeledSpec:
    """A labeled PSI task: the requester learns `label_columns` of the provider for its matches.

    `label_bytes` is the padded size of one encoded label record: every encrypted label has
    this size, so the requester learns nothing from lengths; a longer label is an error.
    `max_query_keys` bounds the distinct keys in one query (the provider's rate limit).
    `key_rules.duplicates` applies to provider rows and must be REJECT or FIRST; requester rows
    sharing a key are queried once and all of them receive the labels.
    """

    algorithm: LabeledAlgorithm
    key_rules: KeyRules
    label_columns: tuple[str, ...]
    label_bytes: int
    max_query_keys: int
    he: HeParams | None = None

    def __post_init__(self) -> None:
        if self.key_rules.duplicates is DuplicateRule.ALL:
            raise SpecError(
                "labeled PSI needs one label per provider key: duplicates must be reject or first"
            )
        if not self.label_columns:
            raise SpecError("label_columns must name at least one column")
        if not 1 <= self.label_bytes <= 1 << 16:
            raise SpecError("label_bytes must be within 1..65536")
        if not 1 <= self.max_query_keys <= 1 << 24:
            raise SpecError("max_query_keys must be within 1..2^24")
        if self.algorithm is LabeledAlgorithm.HE and self.he is None:
            raise SpecError("algorithm=he needs HeParams")

    def digest(self) -> bytes:
        """A canonical hash of the spec; both parties must agree on it."""
        return _canonical_digest(asdict(self))


def _canonical_digest(fields: dict[str, object]) -> bytes:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=32, person=b"datum-psi-spec").digest()
