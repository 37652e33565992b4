"""`node.toml` parsing: paths relative to the file, exactly one key source, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from compute.errors import ConfigError
from oracle.node.config import NodeConfig, load_config

KEY = "0x" + "42" * 32

BASE = """
rpc_url = "http://127.0.0.1:8545"
deployment = "deploy/deployment.json"
data_dir = "data"
listen_port = 9001
confirmations = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_a_full_config_with_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    text = (
        BASE
        + 'private_key_file = "key"\nworkers = 2\ncapabilities = ["he"]\n[limits]\nmax_upload_bytes = 1024\n'
    )
    config = load_config(write(tmp_path, text))
    assert config.data_dir == tmp_path / "data"
    assert config.deployment == tmp_path / "deploy" / "deployment.json"
    assert config.confirmations == 2 and config.workers == 2 and config.limits.max_upload_bytes == 1024
    assert config.listen_host == "127.0.0.1" and config.rpc_ws_url is None
    assert config.signing_account().address == Account.from_key(KEY).address


def test_an_inline_key_stays_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + f'private_key = "{KEY}"\n'))
    assert KEY not in repr(config) and KEY[2:] not in str(config.model_dump())
    assert config.signing_account().address == Account.from_key(KEY).address


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "exactly one of private_key and private_key_file"),
        (f'private_key = "{KEY}"\nprivate_key_file = "key"\n', "exactly one"),
        (f'private_key = "{KEY}"\nsurprise = 1\n', "surprise"),
        (f'private_key = "{KEY}"\ncapabilities = ["psi"]\n', "capabilities"),
        (f'private_key = "{KEY}"\nworkers = 0\n', "workers"),
    ],
)
def test_invalid_configs_name_the_problem(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE + extra))


def test_confirmations_are_required(tmp_path: Path) -> None:
    text = BASE.replace("confirmations = 2\n", "") + f'private_key = "{KEY}"\n'
    with pytest.raises(ConfigError, match="confirmations"):
        load_config(write(tmp_path, text))


def test_unreadable_files_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no node config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "rpc_url = \n"))
    config = load_config(write(tmp_path, BASE + 'private_key_file = "nokey"\n'))
    with pytest.raises(ConfigError, match="cannot read private_key_file"):
        config.signing_account()
    bad = NodeConfig.model_validate(
        {
            "private_key": "0x1234",
            "rpc_url": "http://x",
            "deployment": "d.json",
            "data_dir": "d",
            "listen_port": 1,
            "confirmations": 0,
        }
    )
    with pytest.raises(ConfigError, match="not hold a valid private key"):
        bad.signing_account()
