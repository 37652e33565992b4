"""Deploy the Datum contracts to any EVM endpoint and write the deployment manifest.

    DATUM_RPC_URL=http://... DATUM_PRIVATE_KEY=0x... python scripts/deploy.py deployment.json

The deploying key owns the contracts and is the treasury. For a local network with
staked nodes use `datum devnet up` instead.
"""

import sys
from pathlib import Path

from eth_account import Account

from compute.errors import ConfigError, DatumError
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.deploy import deploy_all
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import TxManager
from oracle.config import Settings


def main(argv: list[str]) -> int:
    """Deploy, write the manifest to argv[0], print its path."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    settings = Settings()
    try:
        if not settings.rpc_url or settings.private_key is None:
            raise ConfigError("set DATUM_RPC_URL and DATUM_PRIVATE_KEY")
        store = ArtifactStore(settings.artifacts_dir)
        chain = Chain(connect(settings.rpc_url, settings.rpc_timeout_s), store.error_table())
        account = Account.from_key(settings.private_key.get_secret_value())
        deployment = deploy_all(TxManager(chain, account), store)
        deployment.save(Path(argv[0]))
    except DatumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
