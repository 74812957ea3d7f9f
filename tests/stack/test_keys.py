"""make run's CURVE key set on disk, and the key helpers every daemon uses (no daemons)."""
from __future__ import annotations

import os
import stat

import pytest
import zmq

from outbox_relay.config import relay_keys
from runtime import curve
from runtime.settings import SettingError
from stack.keys import KeyFileError, KeySet


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_made_once_private_and_reused(tmp_path):
    d = tmp_path / "curve"
    first = KeySet.load_or_create(d)
    assert mode(d) == 0o700
    for role in ("broker", "relay", "syncserver"):
        assert mode(d / f"{role}.key_secret") == 0o600
        assert (d / f"{role}.key").exists()
        # pyzmq reads them as its own certificates.
        public, secret = zmq.auth.load_certificate(d / f"{role}.key_secret")
        assert public.decode() == curve.public_of(secret.decode())
        assert zmq.auth.load_certificate(d / f"{role}.key")[1] is None
    assert KeySet.load_or_create(d) == first
    assert len({first.broker, first.relay, first.syncserver}) == 3


def test_secret_files_are_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        curve.write_keypair(tmp_path, "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "x.key_secret") == 0o600
    with pytest.raises(FileExistsError):
        curve.write_keypair(tmp_path, "x")  # never overwrites a key


def test_a_readable_or_broken_secret_file_is_refused(tmp_path):
    d = tmp_path / "curve"
    KeySet.load_or_create(d)
    os.chmod(d / "relay.key_secret", 0o644)
    with pytest.raises(KeyFileError, match="relay.key_secret is readable by others"):
        KeySet.load_or_create(d)
    os.chmod(d / "relay.key_secret", 0o600)
    (d / "relay.key_secret").write_text('curve\n    public-key = "x"\n    secret-key = "not a key"\n')
    with pytest.raises(KeyFileError, match="not a Z85 CURVE secret key"):
        KeySet.load_or_create(d)


def test_roles_fit_together():
    keys = KeySet.generate()
    assert keys.publisher().server == keys.subscriber().server == keys.broker_public
    assert keys.publisher().public == keys.relay_public
    cfg = keys.broker_config("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert cfg.publishers == {keys.relay_public} and cfg.subscribers == {keys.syncserver_public}
    assert keys.relay not in repr(keys) and keys.relay not in repr(keys.publisher())


@pytest.mark.parametrize("text", ["", "short", "#" * 40, "%" * 40, "A" * 39 + " ", "é" * 40])
def test_check_key_refuses_and_never_echoes_a_whole_value(text):
    with pytest.raises(curve.CurveKeyError) as info:
        curve.check_key(text, "secret key")
    if len(text) > 12:
        assert text.strip() not in str(info.value)


def test_a_secret_key_from_a_file_a_certificate_or_a_bare_value(tmp_path):
    keys = KeySet.generate()
    bare = tmp_path / "bare"
    bare.write_text(keys.relay + "\n")
    _public_file, secret_file = curve.write_keypair(tmp_path, "relay", keys.relay)
    env = {"OUTBOX_RELAY_BROKER_PUBLIC_KEY": keys.broker_public}
    assert relay_keys({**env, "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE": str(bare)}) == keys.publisher()
    assert relay_keys({**env, "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE": str(secret_file)}) == keys.publisher()
    with pytest.raises(SettingError, match="OUTBOX_RELAY_CURVE_SECRET_KEY_FILE: .*no such file"):
        relay_keys({**env, "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE": str(tmp_path / "nope")})
    with pytest.raises(SettingError, match="not both"):
        relay_keys({**env, "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE": str(bare), "OUTBOX_RELAY_CURVE_SECRET_KEY": keys.relay})
    with pytest.raises(SettingError, match="OUTBOX_RELAY_BROKER_PUBLIC_KEY is not set"):
        relay_keys({"OUTBOX_RELAY_CURVE_SECRET_KEY": keys.relay})


def test_key_lists_take_commas_or_spaces_for_rotation():
    a, b = KeySet.generate().relay_public, KeySet.generate().relay_public
    assert curve.key_list(f"{a}, {b}") == {a, b} == curve.key_list(f"{a}\n{b}")
    with pytest.raises(curve.CurveKeyError):
        curve.key_list(" , ")
