"""Outsourced computation on ciphertext: Paillier (HEU ZPaillier, OU) and CKKS (TenSEAL).

The owner generates keys, encrypts the columns its spec names and sends the public
context with them; a compute node evaluates the spec's formula with the public context
only; the owner decrypts::

    keys = generate_keys(Scheme.ZPAILLIER)                       # owner
    spec = HETaskSpec(Scheme.ZPAILLIER, "sum(income)", ("income",), scale=1)
    blob = encrypt_columns(keys, {"income": incomes}, spec)       # owner
    out = evaluate(keys.public_context, blob, spec.formula, limits=spec.limits)  # node
    total = decrypt(keys, out, spec)                              # owner

See docs/HE.md for the formula language, the schemes and their error bounds.
"""

from compute.he.bounds import error_bound
from compute.he.decrypt import decrypt, decrypt_exact
from compute.he.encoding import parse_csv
from compute.he.encrypt import encrypt_columns
from compute.he.evaluate import evaluate, result_digest
from compute.he.keys import OwnerKeys, PublicContext, generate_keys, load_public_context
from compute.he.lexer import FormulaError
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.parser import parse_formula
from compute.he.scheme import Scheme
from compute.he.spec import HETaskSpec, spec_from_json

__all__ = [
    "DEFAULT_LIMITS",
    "FormulaError",
    "HELimits",
    "HETaskSpec",
    "OwnerKeys",
    "PublicContext",
    "Scheme",
    "decrypt",
    "decrypt_exact",
    "encrypt_columns",
    "error_bound",
    "evaluate",
    "generate_keys",
    "load_public_context",
    "parse_csv",
    "parse_formula",
    "result_digest",
    "spec_from_json",
]
