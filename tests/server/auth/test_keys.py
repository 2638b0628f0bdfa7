"""The signing key: generated once into the data directory, or given; a weak one stops the server."""

from __future__ import annotations

import stat

import pytest

from server.auth.keys import KEY_FILE, WeakSigningKey, load_signing_key
from server.settings import MIN_SIGNING_KEY_BYTES, Settings


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch):
    monkeypatch.delenv("PYQD_SIGNING_KEY", raising=False)
    monkeypatch.delenv("PYQD_DEV", raising=False)


def test_first_load_writes_a_private_key_file_and_later_loads_reuse_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "fresh" / "data")
    key = load_signing_key(settings)
    path = settings.data_dir / KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= MIN_SIGNING_KEY_BYTES
    assert load_signing_key(settings) == key
    assert load_signing_key(Settings(data_dir=tmp_path / "other")) != key


def test_key_from_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    given = "k" * MIN_SIGNING_KEY_BYTES
    monkeypatch.setenv("PYQD_SIGNING_KEY", given)
    settings = Settings(data_dir=tmp_path / "data")
    assert load_signing_key(settings) == given.encode()
    assert not (settings.data_dir / KEY_FILE).exists()


@pytest.mark.parametrize("weak", ["", "short", "x" * (MIN_SIGNING_KEY_BYTES - 1)])
def test_weak_key_is_refused_outside_dev_mode(tmp_path, weak):
    with pytest.raises(WeakSigningKey, match="PYQD_SIGNING_KEY"):
        load_signing_key(Settings(data_dir=tmp_path, signing_key=weak))
    assert load_signing_key(Settings(data_dir=tmp_path, signing_key=weak, dev=True)) == weak.encode()


def test_weak_key_file_is_refused_too(tmp_path):
    (tmp_path / KEY_FILE).write_text("tooshort\n")
    with pytest.raises(WeakSigningKey, match=KEY_FILE):
        load_signing_key(Settings(data_dir=tmp_path))
    assert load_signing_key(Settings(data_dir=tmp_path, dev=True)) == b"tooshort"
