"""The one settings class, read once by the CLI (environment variables prefixed ``DATUM_``).

Code below the CLI takes explicit parameters; only the CLI builds a `Settings`.
"""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Datum settings.

    ``DATUM_HOME``: state directory (default ``.datum`` in the current directory);
    ``DATUM_RPC_URL``: chain endpoint (default: the running devnet's);
    ``DATUM_DEPLOYMENT``: deployment manifest (default: the devnet's);
    ``DATUM_PRIVATE_KEY``: the key that signs transactions (default: a devnet account);
    ``DATUM_ARTIFACTS_DIR``: forge output (default ``build/forge`` of the checkout);
    ``DATUM_ANVIL``: anvil binary (default: the npm one in the checkout).
    """

    model_config = SettingsConfigDict(env_prefix="DATUM_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.cwd() / ".datum")
    rpc_url: str | None = None
    deployment: Path | None = None
    private_key: SecretStr | None = None
    artifacts_dir: Path | None = None
    anvil: Path | None = None
    rpc_timeout_s: float = 10.0
