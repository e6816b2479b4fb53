"""The master key, and sealing secrets under it with AES-256-GCM: below both the meter model's storage and the
keystores, which each seal what they keep.

Decoder and vending keys never sit on disk or in a database column in
plaintext: they are sealed under a 256-bit master key, taken from
``MITA_MASTER_KEY`` (64 hex digits) or from the file named by
``MITA_MASTER_KEY_FILE`` (default ``~/.config/mita/master.key``, created with
mode 0600 on first use). The associated data binds a sealed value to what it
belongs to (a meter number, a supply group), so a sealed key copied onto
another record does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

try:  # the same class as cryptography's public AESGCM, taken where it lives: importing the public module first
    # loads the whole cipher package (~2.3 ms of `mita meter enter`, a twentieth of it); tests/cli/test_startup.py holds
    # the two the same object, and a cryptography that moves it falls back to the public import
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    AESGCM = _rust_openssl.aead.AESGCM
except (ImportError, AttributeError):  # pragma: no cover - another cryptography
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mita.sts.errors import StsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time of mita meter enter)
if TYPE_CHECKING:
    from mita.settings import MasterKeySettings

#: ``MasterKeySettings.master_key_file``'s default (a test keeps the two equal).
DEFAULT_FILE = "~/.config/mita/master.key"


class KeyStoreError(StsError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def master_key(settings: MasterKeySettings | None = None) -> bytes:
    """The master key: ``MITA_MASTER_KEY``, or the file ``MITA_MASTER_KEY_FILE`` (made on first use)."""
    if settings is None:
        text, file = environment()
    else:
        text = settings.master_key.get_secret_value() if settings.master_key is not None else None
        file = settings.master_key_file
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise KeyStoreError("bad_master_key", "MITA_MASTER_KEY must be 64 hex digits (256 bits)")
        return key
    path = os.path.expanduser(file)  # os.path rather than pathlib: mita meter enter's start-up time
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex())  # os.urandom: what secrets.token_hex reads, without importing it
    try:
        with open(path) as f:
            key = bytes.fromhex(f.read().strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise KeyStoreError("bad_master_key", f"{path} must hold 64 hex digits (256 bits)")
    return key


def environment() -> tuple[str | None, str]:
    """``MasterKeySettings``' two values (``MITA_MASTER_KEY``, ``MITA_MASTER_KEY_FILE``), read as it reads them
    (names in any case) but without pydantic, which alone takes longer to import than ``mita meter enter`` may
    take to run; a test keeps the two readings equal. Every unseal asks (the head-end: once per command), so the
    names are scanned and only those two values read, not every value decoded (35 variables: 36 -> 15 us)."""
    environ = os.environ
    found = {name.upper(): environ[name] for name in environ if name.upper().startswith("MITA_MASTER_KEY")}
    return found.get("MITA_MASTER_KEY"), found.get("MITA_MASTER_KEY_FILE", DEFAULT_FILE)


def seal(secret: bytes, context: str, key: bytes | None = None) -> bytes:
    nonce = os.urandom(12)  # secrets.token_bytes(12) is this call
    return nonce + AESGCM(key or master_key()).encrypt(nonce, secret, context.encode())


def unseal(sealed: bytes, context: str, key: bytes | None = None) -> bytes:
    try:
        return AESGCM(key or master_key()).decrypt(sealed[:12], sealed[12:], context.encode())
    except (InvalidTag, ValueError):
        raise KeyStoreError("key_unreadable", "a sealed key does not open with this master key") from None
