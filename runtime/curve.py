"""CURVE keys for the broker and its peers: validate, derive, read and write key files
(no network I/O; ClientKeys.apply only sets a socket's options).

Every key is a Curve25519 key written in Z85 (40 characters, 32 bytes), the form libzmq
and `zmq.curve_keypair()` use. A daemon is configured with its own *secret* key only; its
public key is derived from it (`zmq.curve_public`), so the two can never disagree. Peers
know each other by public key: the broker's allow-lists hold its clients' public keys, and
every client holds the broker's public key (without it a client cannot even start the
handshake, and with a wrong one it is talking to an impostor).

Key files use pyzmq's certificate format (`zmq.auth.create_certificates`, readable by
`zmq.auth.load_certificate`): `<name>.key` holds the public key, `<name>.key_secret` both
keys and is created with mode 0600. A secret-key setting may also point at a file holding
nothing but the Z85 secret key (a docker secret).
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

KEY_LENGTH = 40  # Z85 characters of a 32-byte key
_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class CurveKeyError(ValueError):
    """A key or key file is missing or malformed; the message says which and why."""


def check_key(text: str, what: str = "key") -> str:
    """`text` (stripped) if it is a Z85 Curve25519 key, else CurveKeyError.

    >>> check_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'
    """
    key = text.strip()
    if not _Z85.match(key) or not _decodes(key):
        shown = key if len(key) <= 12 else key[:4] + "..."  # never echo a whole (secret) value
        raise CurveKeyError(f"{shown!r} is not a Z85 CURVE {what} "
                            f"({KEY_LENGTH} characters of the Z85 alphabet, as zmq.curve_keypair() makes)")
    return key


def _decodes(key: str) -> bool:
    # Each 5-character group must stand for a 32-bit value ("%%%%%" does not).
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, struct.error):
        return False


def public_of(secret: str) -> str:
    """The public key that belongs to a Z85 secret key."""
    return zmq.curve_public(check_key(secret, "secret key").encode()).decode()


def key_list(text: str) -> frozenset[str]:
    """A comma- or whitespace-separated list of public keys (at least one)."""
    keys = frozenset(check_key(part, "public key") for part in re.split(r"[\s,]+", text) if part)
    if not keys:
        raise CurveKeyError("lists no public key")
    return keys


@dataclass(frozen=True)
class ClientKeys:
    """What a broker client needs: its own key pair and the broker's public key."""
    secret: str = field(repr=False)  # never in a log line or a traceback
    server: str

    def __post_init__(self) -> None:
        check_key(self.secret, "secret key")
        check_key(self.server, "public key")

    @property
    def public(self) -> str:
        return public_of(self.secret)

    @classmethod
    def generate(cls, server: str) -> "ClientKeys":
        """A fresh key pair for a client of the broker whose public key is `server`."""
        _public, secret = zmq.curve_keypair()
        return cls(secret=secret.decode(), server=server)

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the broker; call before connect()."""
        sock.curve_secretkey = self.secret.encode()
        sock.curve_publickey = self.public.encode()
        sock.curve_serverkey = self.server.encode()


def generate_secret() -> str:
    """A fresh Z85 secret key (its public key is public_of(it))."""
    return zmq.curve_keypair()[1].decode()


# ---------------------------------------------------------------- files

def read_secret_file(path: str | os.PathLike) -> str:
    """The secret key in a pyzmq certificate (`*.key_secret`) or in a file holding only the
    Z85 key (a docker secret)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise CurveKeyError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CurveKeyError(f"{p}: cannot read it ({exc})") from None
    if "secret-key" in text:
        try:
            _public, secret = zmq.auth.load_certificate(p)
        except (OSError, ValueError) as exc:
            raise CurveKeyError(f"{p}: {exc}") from None
        if not secret:
            raise CurveKeyError(f"{p}: holds no secret-key")
        text = secret.decode("ascii", "replace")
    try:
        return check_key(text, "secret key")
    except CurveKeyError as exc:
        raise CurveKeyError(f"{p}: {exc}") from None


def read_public_file(path: str | os.PathLike) -> str:
    """The public key in a pyzmq certificate (`*.key` or `*.key_secret`)."""
    p = Path(path)
    try:
        public, _secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"{p}: {exc}") from None
    try:
        return check_key(public.decode("ascii", "replace"), "public key")
    except CurveKeyError as exc:
        raise CurveKeyError(f"{p}: {exc}") from None


def write_keypair(directory: str | os.PathLike, name: str, secret: str | None = None) -> tuple[Path, Path]:
    """Write `<name>.key` (public, 0644) and `<name>.key_secret` (0600, created so: the
    secret is never readable by others, not even for a moment) in pyzmq's certificate
    format. Refuses to overwrite either file. Returns (public file, secret file)."""
    secret = check_key(secret, "secret key") if secret else generate_secret()
    public = public_of(secret)
    d = Path(directory)
    public_file, secret_file = d / f"{name}.key", d / f"{name}.key_secret"
    body = f"metadata\ncurve\n    public-key = \"{public}\"\n"
    _create(secret_file, "#   ZeroMQ CURVE **Secret** Certificate: keep it private (mode 0600)\n\n"
            + body + f"    secret-key = \"{secret}\"\n", 0o600)
    _create(public_file, "#   ZeroMQ CURVE Public Certificate\n\n" + body, 0o644)
    return public_file, secret_file


def _create(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, mode)  # whatever the umask was
