"""The PSI task's pieces a node and a requester share: the spec (its hash is on chain), the
session messages and link setup, the receipt and attestation the committee signs for, the
served dataset's proof against its on-chain commitment, and the provider's session store."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import SpecError
from compute.psi import CaseRule, DuplicateRule, EmptyKeyRule, KeyRules, Protocol, Reveal
from oracle.chain.datasets import describe_csv
from oracle.node.psi_attest import (
    AttestationError,
    AttestationFacts,
    PsiAttestation,
    countersign,
    result_commitment,
    sign_receipt,
    verify_attestation,
    verify_receipt,
)
from oracle.node.psi_datasets import (
    DatasetMismatch,
    DatasetMissing,
    check_dataset,
    load_dataset,
    parse_csv_table,
    store_dataset,
)
from oracle.node.psi_spec import (
    PsiTaskSpec,
    SessionAnswer,
    SessionOffer,
    link_config,
    new_session_id,
    parse_message,
    psi_servable,
    session_task,
    spec_uri,
)
from oracle.node.psi_store import SessionRecord, SessionState, SessionStore

REQUESTER = Account.from_key("0x" + "11" * 32)
OWNER = Account.from_key("0x" + "22" * 32)
NODE_KEY = Account.from_key("0x" + "33" * 32)
STRANGER = Account.from_key("0x" + "44" * 32)
TASK_MANAGER = "0x" + "ab" * 20
SPEC = PsiTaskSpec.build(dataset_id=4, protocol="rr22", reveal="me")
SESSION = "t9-" + "0f" * 16
RULES = KeyRules(CaseRule.EXACT, EmptyKeyRule.REJECT, DuplicateRule.ALL)


# -- spec and session messages ---------------------------------------------------------------


def test_the_spec_is_canonical_and_hashes_to_what_goes_on_chain() -> None:
    data = SPEC.canonical_json()
    assert json.loads(data)["schema"] == "datum.psi.v1"
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert SPEC.spec_hash() == hashlib.sha256(data).digest()
    assert parse_message(PsiTaskSpec, data, "spec") == SPEC
    engine = SPEC.engine_spec()
    assert engine.protocol is Protocol.RR22 and engine.reveal is Reveal.ROWS and engine.receivers == (0,)
    assert engine.key_rules == RULES
    other = PsiTaskSpec.build(dataset_id=4, protocol="ecdh", reveal="me", case="casefold")
    assert other.spec_hash() != SPEC.spec_hash()
    assert other.engine_spec().key_rules.case is CaseRule.CASEFOLD


def test_the_spec_refuses_what_the_network_does_not_serve() -> None:
    with pytest.raises(SpecError, match="--reveal size is served by the DH cardinality protocol"):
        PsiTaskSpec.build(dataset_id=1, protocol="rr22", reveal="size")
    with pytest.raises(SpecError, match="--labels is not served with --protocol kkrt"):
        PsiTaskSpec.build(
            dataset_id=1, protocol="kkrt", reveal="me", labels=("a",), label_bytes=8, query_keys=1
        )
    with pytest.raises(SpecError, match="--labels runs with --reveal me only"):
        PsiTaskSpec.build(
            dataset_id=1, protocol="he", reveal="both", labels=("a",), label_bytes=8, query_keys=1
        )
    with pytest.raises(SpecError, match="--protocol md5 is not served"):
        PsiTaskSpec.build(dataset_id=1, protocol="md5", reveal="me")
    labeled = json.loads(SPEC.canonical_json()) | {"labels": ["a"], "protocol": "ecdh"}  # no label_bytes
    with pytest.raises(SpecError, match="labeled PSI needs label_bytes"):
        parse_message(PsiTaskSpec, json.dumps(labeled).encode(), "spec")
    with pytest.raises(SpecError, match="dataset_id"):
        PsiTaskSpec.build(dataset_id=0, protocol="rr22", reveal="me")
    with pytest.raises(SpecError, match="case"):
        PsiTaskSpec.build(dataset_id=1, protocol="rr22", reveal="me", case="upper")
    extra = json.loads(SPEC.canonical_json()) | {"keys": ["alice"]}
    with pytest.raises(SpecError, match="keys"):
        parse_message(PsiTaskSpec, json.dumps(extra).encode(), "spec")
    with pytest.raises(SpecError, match="over the limit"):
        parse_message(PsiTaskSpec, b" " * (65 << 10), "spec")


def test_a_node_serves_psi_requests_whose_spec_comes_over_p2p_under_its_hash() -> None:
    digest = SPEC.spec_hash()
    assert spec_uri(digest) == "datum:spec:0x" + digest.hex()
    assert psi_servable(2, digest, spec_uri(digest))
    assert not psi_servable(2, digest, "http://127.0.0.1:1/spec")
    assert not psi_servable(2, digest, spec_uri(b"\x00" * 32))
    assert psi_servable(1, digest, "http://127.0.0.1:1/spec")  # other kinds: their own checks


def test_session_ids_and_link_configs() -> None:
    session = new_session_id(12)
    assert session_task(session) == 12 and session != new_session_id(12)
    with pytest.raises(SpecError):
        session_task("t12-short")
    offer = SessionOffer(session_id=session, requester_link="127.0.0.1:4000")
    answer = SessionAnswer(session_id=session, provider_link="127.0.0.1:4001")
    link = link_config(SPEC, 1, offer, answer, budget_s=100.0)
    assert link.rank == 1 and link.addresses == ("127.0.0.1:4000", "127.0.0.1:4001")
    assert link.session_id == session and link.deadline_s == 100.0
    assert link_config(SPEC, 0, offer, answer, budget_s=1e9).deadline_s == SPEC.deadline_s
    with pytest.raises(SpecError, match="no time"):
        link_config(SPEC, 0, offer, answer, budget_s=0.5)
    with pytest.raises(SpecError, match="another session"):
        link_config(SPEC, 0, offer, SessionAnswer(session_id=new_session_id(12), provider_link="h:1"), 100.0)
    for bad in ("127.0.0.1", "host:port", "a b:1", "127.0.0.1:1\n"):
        with pytest.raises(SpecError):
            parse_message(
                SessionOffer, json.dumps({"session_id": session, "requester_link": bad}).encode(), "o"
            )


# -- receipts and attestations ---------------------------------------------------------------


def facts(**changes: object) -> AttestationFacts:
    values: dict[str, object] = {
        "chain_id": 31337,
        "task_manager": TASK_MANAGER,
        "task_id": 9,
        "spec_hash": SPEC.spec_hash(),
        "requester": REQUESTER.address,
        "provider_keys": {4: (OWNER.address, NODE_KEY.address)},
        "row_counts": {4: 1000},
    }
    return AttestationFacts(**(values | changes))  # type: ignore[arg-type]


def receipt(account: object = REQUESTER, **changes: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "chain_id": 31337,
        "task_manager": TASK_MANAGER,
        "task_id": 9,
        "spec_hash": SPEC.spec_hash(),
        "session_id": SESSION,
        "dataset_id": 4,
        "commitment": result_commitment(b"\x01" * 32, b"client_id\nc1\n"),
    }
    return sign_receipt(account, **(values | changes))  # type: ignore[arg-type]


def test_the_commitment_hides_the_result_behind_its_salt() -> None:
    data = b"client_id\nc1\n"
    assert result_commitment(b"\x01" * 32, data) == result_commitment(b"\x01" * 32, data)
    assert result_commitment(b"\x02" * 32, data) != result_commitment(b"\x01" * 32, data)
    assert result_commitment(b"\x01" * 32, b"client_id\n") != result_commitment(b"\x01" * 32, data)
    with pytest.raises(ValueError):
        result_commitment(b"short", data)


def test_a_receipt_verifies_only_for_its_task_session_and_requester() -> None:
    good = receipt()
    assert verify_receipt(good, facts(), SESSION) == good
    with pytest.raises(AttestationError, match="another session"):
        verify_receipt(good, facts(), "t9-" + "aa" * 16)
    with pytest.raises(AttestationError, match="task id"):
        verify_receipt(good, facts(task_id=10))
    with pytest.raises(AttestationError, match="spec hash"):
        verify_receipt(good, facts(spec_hash=b"\x00" * 32))
    with pytest.raises(AttestationError, match="task manager"):
        verify_receipt(good, facts(task_manager="0x" + "cd" * 20))
    with pytest.raises(AttestationError, match="not one of the task's datasets"):
        verify_receipt(receipt(dataset_id=5), facts())
    with pytest.raises(AttestationError, match="receiver is not the task's requester"):
        verify_receipt(receipt(STRANGER), facts())
    forged = good.model_copy(update={"result_commitment": "0x" + "ee" * 32})  # signature kept
    with pytest.raises(AttestationError, match="not signed by the task's requester"):
        verify_receipt(forged, facts())


def test_the_attestation_binds_both_signatures_the_row_count_and_its_bytes() -> None:
    attestation = countersign(NODE_KEY, receipt(), 1000)
    data = attestation.to_bytes()
    assert verify_attestation(data, facts()) == attestation
    assert attestation.result_hash() == hashlib.sha256(data).digest()
    assert (
        verify_attestation(countersign(OWNER, receipt(), 1000).to_bytes(), facts()).provider == OWNER.address
    )
    with pytest.raises(AttestationError, match="may not attest"):
        verify_attestation(countersign(STRANGER, receipt(), 1000).to_bytes(), facts())
    with pytest.raises(AttestationError, match="commits to 1000 rows"):
        verify_attestation(countersign(NODE_KEY, receipt(), 999).to_bytes(), facts())
    with pytest.raises(AttestationError, match="canonical"):
        verify_attestation(json.dumps(json.loads(data), indent=1).encode(), facts())
    with pytest.raises(AttestationError, match="invalid"):
        verify_attestation(b"{}", facts())
    lied = json.loads(data)
    lied["provider_rows"] = 1000  # unchanged count, but a statement signed by someone else
    lied["provider_signature"] = countersign(STRANGER, receipt(), 1000).provider_signature
    raw = PsiAttestation.model_validate(lied).to_bytes()
    with pytest.raises(AttestationError, match="not signed by its key"):
        verify_attestation(raw, facts())
    swapped = json.loads(data)
    swapped["receipt"]["result_commitment"] = "0x" + "ee" * 32  # the receipt's own signature breaks
    with pytest.raises(AttestationError, match="requester"):
        verify_attestation(PsiAttestation.model_validate(swapped).to_bytes(), facts())


@settings(max_examples=20, deadline=None)
@given(session=st.binary(min_size=16, max_size=16), commitment=st.binary(min_size=32, max_size=32))
def test_the_providers_signature_binds_the_receipts_session_and_commitment(
    session: bytes, commitment: bytes
) -> None:
    attestation = countersign(NODE_KEY, receipt(), 1000)
    other = receipt(session_id="t9-" + session.hex(), commitment=commitment)  # validly signed by A
    mixed = attestation.model_copy(update={"receipt": other})
    if other == attestation.receipt:
        assert verify_attestation(mixed.to_bytes(), facts()) == attestation
    else:
        with pytest.raises(AttestationError, match="not signed by its key"):
            verify_attestation(mixed.to_bytes(), facts())


# -- served datasets -------------------------------------------------------------------------


def registered(tmp_path: Path, text: str, key: str = "client_id") -> tuple[Path, object, bytes]:
    """A CSV described as `datum data register` does, stored in a node data dir."""
    source = tmp_path / "bank.csv"
    source.write_text(text)
    meta = describe_csv(source, key)
    data_dir = tmp_path / "node-data"
    store_dataset(
        data_dir,
        chain_id=31337,
        dataset_id=4,
        source=source,
        key=key,
        salt=meta.salt,
        document=meta.document(),
    )
    return data_dir, meta, meta.metadata_hash


BANK = "client_id,income_class\nc1,high\nc2,high\nc3,high\n"


def test_a_served_dataset_opens_its_commitment(tmp_path: Path) -> None:
    data_dir, meta, metadata_hash = registered(tmp_path, BANK)
    folder = data_dir / "datasets" / "4"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    local = load_dataset(data_dir, 4)
    assert local.key == "client_id" and local.path.read_text() == BANK
    table, keys = check_dataset(local, chain_id=31337, metadata_hash=metadata_hash, row_count=3, rules=RULES)
    assert keys == 3 and table.columns == ("client_id", "income_class") and table.rows[2] == ("c3", "high")
    with pytest.raises(SpecError, match="exists already"):
        registered(tmp_path, BANK)


def test_any_difference_from_the_commitment_is_refused_with_its_reason(tmp_path: Path) -> None:
    data_dir, meta, metadata_hash = registered(tmp_path, BANK)
    local = load_dataset(data_dir, 4)

    def code(**kw: object) -> str:
        args: dict[str, object] = {
            "chain_id": 31337,
            "metadata_hash": metadata_hash,
            "row_count": 3,
            "rules": RULES,
        } | kw
        with pytest.raises(DatasetMismatch) as exc:
            check_dataset(local, **args)  # type: ignore[arg-type]
        return exc.value.code

    assert code(row_count=4) == "row_count_mismatch"
    assert code(metadata_hash=keccak(b"other")) == "metadata_mismatch"
    assert code(chain_id=1) == "wrong_chain"
    local.path.write_text(BANK + "c4,high\n")  # one more row than committed
    assert code() == "commitment_mismatch"


def test_duplicate_or_empty_keys_do_not_match_the_committed_row_count(tmp_path: Path) -> None:
    data_dir, _, metadata_hash = registered(tmp_path, BANK + "c1,low\n")  # 4 rows, 3 distinct keys
    local = load_dataset(data_dir, 4)
    with pytest.raises(DatasetMismatch, match="3 distinct keys in 4 rows") as exc:
        check_dataset(local, chain_id=31337, metadata_hash=metadata_hash, row_count=4, rules=RULES)
    assert exc.value.code == "row_count_mismatch"
    other = tmp_path / "other"
    other.mkdir()
    data_dir, _, metadata_hash = registered(other, BANK + " ,low\n")
    with pytest.raises(DatasetMismatch, match="empty key") as exc:
        check_dataset(
            load_dataset(data_dir, 4), chain_id=31337, metadata_hash=metadata_hash, row_count=4, rules=RULES
        )
    assert exc.value.code == "key_rules"


def test_a_dataset_the_node_does_not_hold_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissing, match="does not serve dataset 4"):
        load_dataset(tmp_path, 4)
    folder = tmp_path / "datasets" / "4"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetMissing, match="unreadable"):
        load_dataset(tmp_path, 4)


def test_csv_tables() -> None:
    table = parse_csv_table('\ufeffid , name\n1,"a,b"\n\n2,c\n'.encode())
    assert table.columns == ("id", "name") and table.rows == (("1", "a,b"), ("2", "c"))
    with pytest.raises(SpecError, match="line 3 has 1 cells"):
        parse_csv_table(b"id,name\n1,a\n2\n")
    with pytest.raises(SpecError, match="empty"):
        parse_csv_table(b"")
    with pytest.raises(SpecError, match="UTF-8"):
        parse_csv_table(b"id\n\xff\n")


# -- the provider's sessions -----------------------------------------------------------------


def test_sessions_move_through_their_states_once(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "psi.sqlite3")
    assert store.insert(SessionRecord(9, SessionState.RUNNING, 4, SESSION, REQUESTER.address, 1000))
    assert not store.insert(SessionRecord(9, SessionState.RUNNING, 4, SESSION))  # one per task
    assert not store.transition(9, SessionState.ATTESTED)  # not before done
    assert store.transition(9, SessionState.DONE)
    assert not store.transition(9, SessionState.ABORTED)
    assert store.transition(9, SessionState.ATTESTED, attestation_sha256="ab" * 32)
    got = store.get(9)
    assert got is not None and got.state is SessionState.ATTESTED and got.provider_rows == 1000
    assert store.insert(SessionRecord(10, SessionState.REFUSED, 4, error="consent"))
    assert not store.transition(10, SessionState.RUNNING)
    assert store.insert(SessionRecord(11, SessionState.RUNNING, 4, "t11-" + "00" * 16))
    with pytest.raises(ValueError):
        store.transition(11, SessionState.DONE, state="done")
    store.close()
    reopened = SessionStore(tmp_path / "psi.sqlite3")  # a restart: running sessions died with the node
    assert reopened.abort_running("restarted") == [11]
    aborted = reopened.get(11)
    assert aborted is not None and aborted.state is SessionState.ABORTED and aborted.error == "restarted"
    assert [r.task_id for r in reopened.all()] == [9, 10, 11]
    reopened.close()
    readonly = SessionStore(tmp_path / "psi.sqlite3", readonly=True)
    assert readonly.get(9) == got
    readonly.close()
