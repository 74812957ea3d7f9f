"""The broker's CURVE keys for a whole stack: one key pair per role (broker, relay, sync
server), and the settings that give each daemon what it needs.

`make run` keeps its set in `.curve/` (git-ignored; the directory 0700, each secret file
0600), created on the first start and reused after; tests, chaos and bench make a
throwaway set in memory with `KeySet.generate()`:

    keys = KeySet.generate()
    broker_env = {..., **keys.broker_env()}          # OUTBOX_BROKER_CURVE_SECRET_KEY, ..._KEYS
    relay_env = {..., **keys.relay_env()}            # OUTBOX_RELAY_CURVE_SECRET_KEY, ...
    sync_env = {..., **keys.sync_env()}              # SYNC_CURVE_SECRET_KEY, SYNC_BROKER_PUBLIC_KEY
    Subscriber(..., curve=keys.subscriber())         # a subscriber-library client
    Publisher(url, keys.publisher())                 # a publisher (the relay's role)

`python -m stack.keys` prints a fresh set as the variables compose.yaml requires (append
it to .env); `python -m stack.keys --pair` prints one fresh key pair (for a rotation).
"""
from __future__ import annotations

import argparse
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from outbox_relay.config import BrokerConfig
from runtime.curve import ClientKeys, CurveKeyError, generate_secret, public_of, read_secret_file, write_keypair

ROLES = ("broker", "relay", "syncserver")


class KeyFileError(RuntimeError):
    """make run's key directory cannot be used; str() is the one-line reason."""


@dataclass(frozen=True)
class KeySet:
    """The secret key of each role (Z85); every public key is derived from them."""
    broker: str = field(repr=False)
    relay: str = field(repr=False)
    syncserver: str = field(repr=False)

    @classmethod
    def generate(cls) -> "KeySet":
        return cls(*(generate_secret() for _ in ROLES))

    @classmethod
    def load_or_create(cls, directory: Path) -> "KeySet":
        """The set in `directory`: each role's `<role>.key_secret`, created (with its
        `<role>.key`) when missing. Refuses a secret file others can read."""
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot create the key directory {directory}: {exc}") from None
        secrets = []
        for role in ROLES:
            path = directory / f"{role}.key_secret"
            if not path.exists():
                try:
                    write_keypair(directory, role)
                except (OSError, CurveKeyError) as exc:
                    raise KeyFileError(f"cannot write {path}: {exc}") from None
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise KeyFileError(f"{path} is readable by others (mode {mode:04o}); chmod 600 it or delete"
                                   f" {directory} to make new keys")
            try:
                secrets.append(read_secret_file(path))
            except CurveKeyError as exc:
                raise KeyFileError(f"{exc} (delete {directory} to make new keys)") from None
        return cls(*secrets)

    # ------------------------------------------------------------ public halves
    @property
    def broker_public(self) -> str:
        return public_of(self.broker)

    @property
    def relay_public(self) -> str:
        return public_of(self.relay)

    @property
    def syncserver_public(self) -> str:
        return public_of(self.syncserver)

    # ------------------------------------------------------------ per daemon
    def broker_env(self) -> dict[str, str]:
        return {"OUTBOX_BROKER_CURVE_SECRET_KEY": self.broker,
                "OUTBOX_BROKER_PUBLISHER_KEYS": self.relay_public,
                "OUTBOX_BROKER_SUBSCRIBER_KEYS": self.syncserver_public}

    def relay_env(self) -> dict[str, str]:
        """The relay's settings; also what `outbox-admin replay` and the admin's replay use."""
        return {"OUTBOX_RELAY_CURVE_SECRET_KEY": self.relay, "OUTBOX_RELAY_BROKER_PUBLIC_KEY": self.broker_public}

    def sync_env(self) -> dict[str, str]:
        return {"SYNC_CURVE_SECRET_KEY": self.syncserver, "SYNC_BROKER_PUBLIC_KEY": self.broker_public}

    def env(self) -> dict[str, str]:
        """Every daemon's key settings (they do not collide: each daemon has its prefix)."""
        return {**self.broker_env(), **self.relay_env(), **self.sync_env()}

    def compose_env(self) -> dict[str, str]:
        """The variables compose.yaml takes the keys from (docs/security.md)."""
        return {"CURVE_BROKER_SECRET_KEY": self.broker, "CURVE_BROKER_PUBLIC_KEY": self.broker_public,
                "CURVE_RELAY_SECRET_KEY": self.relay, "CURVE_PUBLISHER_KEYS": self.relay_public,
                "CURVE_SYNC_SECRET_KEY": self.syncserver, "CURVE_SUBSCRIBER_KEYS": self.syncserver_public}

    def publisher(self) -> ClientKeys:
        return ClientKeys(secret=self.relay, server=self.broker_public)

    def subscriber(self) -> ClientKeys:
        return ClientKeys(secret=self.syncserver, server=self.broker_public)

    def broker_config(self, frontend: str, backend: str) -> BrokerConfig:
        """An in-process broker's settings (tests)."""
        return BrokerConfig(frontend=frontend, backend=backend, secret_key=self.broker,
                            publishers=frozenset({self.relay_public}),
                            subscribers=frozenset({self.syncserver_public}))



def dotenv(values: dict[str, str]) -> str:
    """`NAME='value'` lines. Single quotes, because Z85 keys may contain `$`, which compose
    would otherwise take for a variable in an .env file (Z85 has no quote characters)."""
    return "".join(f"{name}='{value}'\n" for name, value in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.keys", description="Fresh CURVE keys for the broker.")
    parser.add_argument("--pair", action="store_true", help="one key pair (SECRET_KEY, PUBLIC_KEY), for a rotation")
    args = parser.parse_args(argv)
    if args.pair:
        secret = generate_secret()
        sys.stdout.write(dotenv({"SECRET_KEY": secret, "PUBLIC_KEY": public_of(secret)}))
    else:
        sys.stdout.write("# The broker's CURVE keys for compose.yaml (docs/security.md). Keep this file private.\n")
        sys.stdout.write(dotenv(KeySet.generate().compose_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
