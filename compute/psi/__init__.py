"""Private set intersection engines: SPU libpsi (RR22, KKRT, ECDH), DH cardinality, HE PSI,
and labeled PSI (DH-OPRF and HE). Entry points: `run_psi`, `prepare_labeled`, `run_labeled`."""

from compute.psi.channel import Channel, MemoryChannel, memory_channel_pair
from compute.psi.he_params import HeParams
from compute.psi.keys import KeyedRows, Table, index_keys, normalize_value
from compute.psi.labeled_dh import DhProvider, LabelTable, OprfKey
from compute.psi.link import LinkConfig
from compute.psi.result import LabeledMatch, LabeledResult, ProviderReport, PsiResult
from compute.psi.run import PartyData, prepare_labeled, run_labeled, run_psi
from compute.psi.spec import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    KeyRules,
    LabeledAlgorithm,
    LabeledSpec,
    Protocol,
    PsiSpec,
    Reveal,
    Role,
)

__all__ = [
    "CaseRule",
    "Channel",
    "DhProvider",
    "DuplicateRule",
    "EmptyKeyRule",
    "HeParams",
    "KeyRules",
    "KeyedRows",
    "LabelTable",
    "LabeledAlgorithm",
    "LabeledMatch",
    "LabeledResult",
    "LabeledSpec",
    "LinkConfig",
    "MemoryChannel",
    "OprfKey",
    "PartyData",
    "Protocol",
    "ProviderReport",
    "PsiResult",
    "PsiSpec",
    "Reveal",
    "Role",
    "Table",
    "index_keys",
    "memory_channel_pair",
    "normalize_value",
    "prepare_labeled",
    "run_labeled",
    "run_psi",
]
