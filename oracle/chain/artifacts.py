"""Contract build artifacts: forge writes ``<out>/<File>.sol/<Contract>.json``; this loads them.

The repository root is found from this file (``oracle/chain/`` is two levels below it);
`build_contracts()` runs the forge binary that `npm ci` put in ``node_modules``.
"""

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.errors import ConfigError

from .errors import ErrorTable

__all__ = [
    "Artifact",
    "ArtifactStore",
    "build_contracts",
    "default_artifacts_dir",
    "forge_path",
    "repo_root",
]

log = logging.getLogger(__name__)

FORGE_RELATIVE = Path("node_modules/@foundry-rs/forge-linux-amd64/bin/forge")


def repo_root() -> Path:
    """The checkout this package runs from (holds foundry.toml)."""
    return Path(__file__).resolve().parents[2]


def default_artifacts_dir() -> Path:
    """Where forge writes artifacts (``out`` in foundry.toml)."""
    return repo_root() / "build" / "forge"


def forge_path() -> Path:
    """The forge binary installed by npm."""
    return repo_root() / FORGE_RELATIVE


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: its ABI and creation bytecode (hex, 0x-prefixed)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str

    @property
    def deployable(self) -> bool:
        """False for interfaces and abstract contracts (no creation code)."""
        return self.bytecode not in ("", "0x")


class ArtifactStore:
    """Reads artifacts from one forge output directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_artifacts_dir()

    def _missing(self, what: str) -> ConfigError:
        return ConfigError(f"{what} not found in {self.directory}: run `make build` (forge build) first")

    def path_of(self, name: str) -> Path:
        """The artifact file of contract `name` (``Name.sol/Name.json`` preferred)."""
        direct = self.directory / f"{name}.sol" / f"{name}.json"
        if direct.is_file():
            return direct
        matches = sorted(self.directory.glob(f"*.sol/{name}.json"))
        if not matches:
            raise self._missing(f"artifact of {name}")
        return matches[0]

    def has(self, name: str) -> bool:
        """Whether contract `name` was built."""
        try:
            self.path_of(name)
        except ConfigError:
            return False
        return True

    def load(self, name: str) -> Artifact:
        """Load contract `name`; `ConfigError` when missing or unreadable."""
        path = self.path_of(name)
        try:
            raw = json.loads(path.read_text())
            abi = raw["abi"]
            bytecode = raw.get("bytecode", {}).get("object", "")
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(f"unreadable artifact {path}: {exc}; run `make build` again") from exc
        if bytecode and not bytecode.startswith("0x"):
            bytecode = "0x" + bytecode
        return Artifact(name=name, abi=abi, bytecode=bytecode)

    def all_abis(self) -> list[list[dict[str, Any]]]:
        """The ABI of every built contract (interfaces and tests included)."""
        if not self.directory.is_dir():
            raise self._missing("build output")
        abis = []
        for path in sorted(self.directory.glob("*.sol/*.json")):
            try:
                abis.append(json.loads(path.read_text())["abi"])
            except (OSError, ValueError, KeyError):
                log.warning("skipping unreadable artifact %s", path)
        return abis

    def error_table(self) -> ErrorTable:
        """Selector -> typed error for every custom error in every built ABI."""
        table = ErrorTable()
        for abi in self.all_abis():
            try:
                table.add_abi(abi)
            except ValueError as exc:  # a selector clash between unrelated test contracts
                log.warning("error table: %s", exc)
        return table


def build_contracts(root: Path | None = None, timeout_s: float = 900.0) -> None:
    """Run ``forge build`` in the repository; `ConfigError` with forge's message when it fails."""
    root = root or repo_root()
    forge = root / FORGE_RELATIVE
    if not forge.is_file():
        raise ConfigError(f"forge not found at {forge}: run `make setup` (npm ci) first")
    log.info("building contracts with %s", forge)
    try:
        done = subprocess.run(
            [str(forge), "build"], cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"forge build timed out after {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-20:]
        raise ConfigError("forge build failed:\n" + "\n".join(tail))
