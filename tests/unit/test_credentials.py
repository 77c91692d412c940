"""Provider keys: from an env var or a mounted Secret file, re-read when the Secret rotates.

A missing key must say *where* it was looked for (so the fix is obvious)
and never show a key value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from modelroute.proxy.credentials import Credentials, MissingCredentials
from modelroute.proxy.table import KeySource

from modelroute.resources import SecretKeyRef


def secret(tmp_path: Path, value: str, name: str = "gw", key: str = "api-key") -> Path:
    path = tmp_path / name / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value, encoding="utf-8")
    return path


SECRET = KeySource(secret_ref=SecretKeyRef(name="gw", key="api-key"))


def test_env_var_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOBAL_API_KEY", "sk-test-env")
    creds = Credentials()
    source = KeySource(env="GLOBAL_API_KEY")
    assert creds.key_for(source) == "sk-test-env"
    assert creds.headers_for(source) == {"Authorization": "Bearer sk-test-env"}
    monkeypatch.setenv("GLOBAL_API_KEY", "sk-rotated")
    assert creds.key_for(source) == "sk-rotated"  # env is read per request, not cached


def test_env_key_with_trailing_newline_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Secret made from an ``echo``ed file keeps its newline through ``secretKeyRef``."""
    monkeypatch.setenv("GLOBAL_API_KEY", "sk-test-env\n")
    headers = Credentials().headers_for(KeySource(env="GLOBAL_API_KEY"))
    assert headers == {"Authorization": "Bearer sk-test-env"}


@pytest.mark.parametrize("value", [None, "", " \n"])
def test_missing_env_var_names_it(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("GLOBAL_API_KEY", raising=False)
    else:
        monkeypatch.setenv("GLOBAL_API_KEY", value)
    with pytest.raises(MissingCredentials, match="environment variable GLOBAL_API_KEY"):
        Credentials().key_for(KeySource(env="GLOBAL_API_KEY"))


def test_custom_header_carries_the_bare_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "abc")
    headers = Credentials().headers_for(KeySource(env="K", header="api-key"))
    assert headers == {"api-key": "abc"}
    assert Credentials().headers_for(None) == {}  # keyless upstream (a local fake)


def test_mounted_secret_file(tmp_path: Path) -> None:
    secret(tmp_path, "sk-from-secret\n")  # trailing newline of `kubectl create secret` files
    assert Credentials(tmp_path).key_for(SECRET) == "sk-from-secret"


def test_rotated_secret_is_picked_up_without_restart(tmp_path: Path) -> None:
    path = secret(tmp_path, "sk-old")
    creds = Credentials(tmp_path, recheck_seconds=0.0)
    assert creds.key_for(SECRET) == "sk-old"
    path.write_text("sk-new", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert creds.key_for(SECRET) == "sk-new"


def test_secret_rotated_by_kubelet_symlink_swap(tmp_path: Path) -> None:
    """The kubelet swaps a ``..data`` symlink; the file path stays, the content changes."""
    old = tmp_path / "..2026_old"
    new = tmp_path / "..2026_new"
    for d, value in ((old, "sk-old"), (new, "sk-new")):
        d.mkdir()
        (d / "api-key").write_text(value, encoding="utf-8")
    os.utime(new / "api-key", (time.time() + 5, time.time() + 5))
    mount = tmp_path / "gw"
    mount.mkdir()
    (mount / "..data").symlink_to(old)
    (mount / "api-key").symlink_to(mount / "..data" / "api-key")
    creds = Credentials(tmp_path, recheck_seconds=0.0)
    assert creds.key_for(SECRET) == "sk-old"
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(new)
    tmp_link.replace(mount / "..data")
    assert creds.key_for(SECRET) == "sk-new"


def test_recheck_interval_caches_between_checks(tmp_path: Path) -> None:
    path = secret(tmp_path, "sk-old")
    creds = Credentials(tmp_path, recheck_seconds=3600)
    assert creds.key_for(SECRET) == "sk-old"
    path.unlink()  # even gone, the cached key serves until the next check
    assert creds.key_for(SECRET) == "sk-old"


def test_missing_secret_names_secret_key_and_path(tmp_path: Path) -> None:
    with pytest.raises(MissingCredentials) as info:
        Credentials(tmp_path).key_for(SECRET)
    message = str(info.value)
    assert "'gw'" in message and "'api-key'" in message
    assert str(tmp_path / "gw" / "api-key") in message


def test_empty_secret_is_missing(tmp_path: Path) -> None:
    secret(tmp_path, "  \n")
    with pytest.raises(MissingCredentials, match="empty"):
        Credentials(tmp_path).key_for(SECRET)


def test_error_never_contains_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret(tmp_path, "sk-secret-value", key="other")
    monkeypatch.setenv("SOME_KEY", "sk-env-value")
    with pytest.raises(MissingCredentials) as info:
        Credentials(tmp_path).key_for(SECRET)
    assert "sk-" not in str(info.value)


# -- issue 13 item 1: the key file must be inside the secrets directory --------------------


def _unchecked(name: str, key: str) -> KeySource:
    """A reference the resource model refuses, as a hand-edited or older table could carry."""
    return KeySource(secret_ref=SecretKeyRef.model_construct(name=name, key=key))


@pytest.mark.parametrize(
    ("name", "key"),
    [("../outside", "token"), ("/", "etc/passwd"), ("gw", "../../outside/token")],
)
def test_a_reference_that_leaves_the_secrets_dir_is_not_read(
    tmp_path: Path, name: str, key: str
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    secret(tmp_path, "stolen-token", name="outside", key="token")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0")
    with pytest.raises(MissingCredentials, match="outside the secrets directory") as err:
        Credentials(secrets_dir).key_for(_unchecked(name, key))
    assert "stolen-token" not in str(err.value)


def test_a_symlink_out_of_the_secrets_dir_is_not_followed(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "gw").mkdir(parents=True)
    secret(tmp_path, "stolen-token", name="outside", key="token")
    (secrets_dir / "gw" / "api-key").symlink_to(tmp_path / "outside" / "token")
    with pytest.raises(MissingCredentials, match="outside the secrets directory"):
        Credentials(secrets_dir).key_for(SECRET)


def test_a_secret_volume_layout_of_symlinks_inside_the_dir_is_read(tmp_path: Path) -> None:
    """kubelet mounts a Secret as key -> ..data/key -> ..<timestamp>/key, all inside the mount."""
    mount = tmp_path / "secrets" / "gw"
    (mount / "..2026_12_02").mkdir(parents=True)
    (mount / "..2026_12_02" / "api-key").write_text("sk-mounted\n")
    (mount / "..data").symlink_to("..2026_12_02")
    (mount / "api-key").symlink_to("..data/api-key")
    assert Credentials(tmp_path / "secrets").key_for(SECRET) == "sk-mounted"
