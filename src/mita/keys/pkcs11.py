"""The PKCS#11 keystore: DKGA04 vending keys that stay inside an HSM.

A vending key lives on the token as a secret key object that is SENSITIVE, not
EXTRACTABLE, PRIVATE, usable for SIGN only and, through CKA_ALLOWED_MECHANISMS,
for CKM_SHA256_HMAC only. The decoder key of a meter is the first 8 (EA07) or
16 (EA11) bytes of an HMAC the token computes over :func:`mita.sts.dkga.dkga04_input`,
so the vending key never enters this process once it is stored (it passes
through once, when it is imported). Lab findings behind every choice here are
in ``docs/notes/hsm-keystore-findings.md``.

What the token cannot do, this keystore refuses rather than fakes:

* DKGA02 (``DK = DES_VK(X) xor X xor VK``) needs the vending key itself for the
  final XOR, and standard PKCS#11 has no mechanism that XORs two secrets, so a
  DKGA02 key would have to leave the HSM: those keys stay in the software
  keystore (``keystore_unsupported``).
* A 160-bit HMAC key cannot be generated *and used* inside SoftHSM (it refuses
  HMAC-SHA-256 keys under 32 bytes), so :meth:`Pkcs11KeyStore.generate` takes the
  bytes from the token's RNG and imports them padded (see there).

Every PKCS#11 failure leaves this module as a :class:`KeyStoreError` with a
stable code (``hsm_unavailable``, ``key_not_found``, ``key_exists``, ``hsm_error``,
...) and a message naming no key material: callers branch on the code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import random
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.attributes import AttributeMapper
from pkcs11.types import Object, Session, SignMixin, Token

from mita.sealing import KeyStoreError
from mita.settings import HsmSettings
from mita.sts import EA, MeterNumber, UnsupportedError
from mita.sts.dkga import dkga04_input
from mita.sts.identity import check_key_params

from .store import KEY_BYTES, Derivation, StoredKey, check_key

_T = TypeVar("_T")

#: Where Debian's softhsm2 package puts the module (a symlink to the multiarch path).
DEFAULT_MODULE: Final = "/usr/lib/softhsm/libsofthsm2.so"
#: Object labels are ``mita-vk:<SGC>:<KRN>``: one key per supply group and key revision, as in the database.
LABEL_PREFIX: Final = "mita-vk"

# SoftHSM refuses CKM_SHA256_HMAC keys under 32 bytes (CKR_KEY_SIZE_RANGE). HMAC pads any key shorter than the
# SHA-256 block with zeros, so the 160-bit key right-padded with zeros to 32 bytes gives the very same MAC.
_HMAC_KEY_BYTES: Final = 32
_KCV_INPUT: Final = bytes(8)  # the software keystore's DKGA04 KCV: HMAC-SHA-256(VK, 8 zero bytes), 3 bytes
_HMAC: Final = Mechanism.SHA256_HMAC
_CHUNK: Final = 1024  # HMACs per lock hold in decoder_keys: a big batch does not stall single vends for long
# After a failed reconnection, calls fail at once (hsm_unavailable) for a while rather than each waiting on an HSM
# that is away (vends run on the event loop too: no call here ever sleeps) or spending a PIN retry counter; the
# wait doubles per failure up to the cap, with jitter, and the first call after it tries again.
_BACKOFF_FIRST_S: Final = 0.05
_BACKOFF_CAP_S: Final = 2.0

_DKGA02_REFUSED: Final = (
    "the PKCS#11 keystore does not hold DKGA02 vending keys: DKGA02 ends with DK = DES_VK(X) xor X xor VK, and "
    "that final XOR needs the vending key itself outside the HSM (standard PKCS#11 has no mechanism that XORs "
    "two secret keys); keep DKGA02 keys in the software keystore"
)

_PIN_ERRORS: Final = (
    pkcs11.PinIncorrect,
    pkcs11.PinInvalid,
    pkcs11.PinLenRange,
    pkcs11.PinLocked,
    pkcs11.PinExpired,
    pkcs11.UserPinNotInitialized,
)
# Failures that mean the session or the login is gone (an HSM restart, a network HSM's timeout), not that the
# request was wrong. PKCS#11 cannot tell which of the two without C_GetSessionInfo (python-pkcs11 has none).
_SESSION_LOST: Final = (
    pkcs11.UserNotLoggedIn,
    pkcs11.DeviceRemoved,
    pkcs11.TokenNotPresent,
    pkcs11.TokenNotRecognised,
    pkcs11.SlotIDInvalid,
    pkcs11.DeviceError,
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.ObjectHandleInvalid,  # a session copy that vanished: its session (or login) was lost
    pkcs11.KeyHandleInvalid,
)


class _NotFound(Exception):
    """No token object has this label, as far as this session sees (its argument: the label)."""


def key_label(sgc: str, krn: int) -> str:
    """The token object label of a supply group's vending key (the :attr:`StoredKey.handle`)."""
    check_key_params(0, sgc, 0, krn)  # 6-digit SGC, KRN 1..9: labels can never collide or be ambiguous
    return f"{LABEL_PREFIX}:{sgc}:{krn}"


def attribute_mapper() -> AttributeMapper:
    """python-pkcs11's attribute mapper, taught CKA_ALLOWED_MECHANISMS (an array of CK_MECHANISM_TYPE).

    python-pkcs11 0.10 has no handler for that attribute, and a template holding an attribute without a handler
    crashes the process (it frees a half-built attribute list): every session this module opens uses this mapper.
    """
    mapper = AttributeMapper()
    mapper.register_handler(
        Attribute.ALLOWED_MECHANISMS,
        lambda mechs: b"".join(struct.pack("L", int(m)) for m in mechs),
        lambda raw: [Mechanism(v) for (v,) in struct.iter_unpack("L", raw)],
    )
    return mapper


def _key_template(label: str, value: bytes) -> dict[Attribute, Any]:
    """A token secret key usable for HMAC-SHA-256 signing and nothing else, which never leaves the token."""
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: value,
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        # Read-only once created (SoftHSM refuses to change it): even a later C_SetAttributeValue(DERIVE=True)
        # leaves the key unusable for anything but HMAC-SHA-256, so it is no DES or derivation oracle.
        Attribute.ALLOWED_MECHANISMS: [_HMAC],
    }


def _signer(obj: Object) -> SignMixin:
    return cast(SignMixin, obj)


# ---------------------------------------------------------------- the module, one login per token per process


class _Module:
    """A PKCS#11 module loaded in this process: one call at a time, and its reloads (C_Finalize, C_Initialize).

    python-pkcs11 initialises the module with no C_INITIALIZE_ARGS, which tells it that the application will not
    call it from several threads at once (PKCS#11 C_Initialize); SoftHSM then runs without locks of its own. So
    every call of this process on the module holds ``calls``, across keystores and their logins.

    A reload is how this process sees a token again once it was removed and put back (SoftHSM, like a USB token,
    keeps a vanished token's store unusable until the module is initialised again) or an HSM after a restart; it
    holds ``calls`` too. ``epoch`` counts reloads: session and object handles from an older epoch are dead, and
    their numbers are handed out again, so a keystore never uses (or closes) one.
    """

    _registry: ClassVar[dict[str, _Module]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.epoch = 0
        self.reloads = 0
        self._calls = threading.Lock()

    @classmethod
    def of(cls, path: str) -> _Module:
        with cls._registry_lock:
            module = cls._registry.get(path)
            if module is None:
                module = cls._registry[path] = cls(path)
            return module

    @contextlib.contextmanager
    def calls(self) -> Iterator[None]:
        """Around PKCS#11 calls (never nested)."""
        with self._calls:
            yield

    def reload(self) -> None:
        """Finalise and initialise the module; every session and object handle of the process dies."""
        with self._calls:
            try:
                lib = pkcs11.lib(self.path)  # initialises it again if the last reload's C_Initialize failed
                lib.reinitialize()
            except pkcs11.PKCS11Error as exc:
                raise KeyStoreError(
                    "hsm_unavailable", f"cannot initialise the PKCS#11 module again ({type(exc).__name__})"
                ) from None
            finally:
                self.epoch += 1
                self.reloads += 1


# ---------------------------------------------------------------- one login per token per process


class _Login:
    """The process's login to one token.

    PKCS#11 login state belongs to the application, not to a session: a second C_Login is refused with
    CKR_USER_ALREADY_LOGGED_IN (without the PIN being checked), and one C_Logout logs every session out and
    destroys every private session object (the keys' session copies) of the process. So keystores on the same
    token share one login, held by a session of its own and ended when the last of them closes.

    ``generation`` counts logins: a keystore whose session predates the current one knows that another
    keystore has logged in again already, and does not log out (which would destroy the others' copies).

    The login also paces reconnections to its token (``failures``, ``retry_at``): once one failed, the next
    reloads the module first (see :class:`_Module`), and none is tried before the back-off has passed.
    """

    _registry: ClassVar[dict[tuple[str, str], _Login]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _salt: ClassVar[bytes] = secrets.token_bytes(16)  # the registry keeps a salted digest of the PIN, never the PIN

    def __init__(self, module: str, token: Token, pin_digest: bytes) -> None:
        self.module = module
        self.token = token
        self.pin_digest = pin_digest
        self.pid = os.getpid()
        self.users = 0
        self.generation = 0
        self.session: Session | None = None
        self.hsm = _Module.of(module)
        self.epoch = self.hsm.epoch  # the module's epoch the login session was opened in
        self.failures = 0  # reconnections failed in a row
        self.retry_at = 0.0  # time.monotonic() before which no reconnection is tried

    @classmethod
    def _digest(cls, pin: str) -> bytes:
        return hashlib.sha256(cls._salt + pin.encode()).digest()

    @classmethod
    def acquire(cls, module: str, token_label: str, pin: str) -> _Login:
        key = (module, token_label)
        with cls._registry_lock:
            login = cls._registry.get(key)
            if login is None:
                with _Module.of(module).calls():  # (another keystore may be mid-call)
                    try:
                        lib = pkcs11.lib(module)
                    except pkcs11.PKCS11Error as exc:  # dlopen or C_Initialize failed: the message names the path
                        raise KeyStoreError("hsm_unavailable", f"cannot load the PKCS#11 module: {exc}") from None
                    try:
                        token = lib.get_token(token_label=token_label)
                    except pkcs11.NoSuchToken:
                        raise KeyStoreError(
                            "hsm_unavailable", f"no token labelled {token_label!r} in the PKCS#11 module {module}"
                        ) from None
                    except pkcs11.MultipleTokensReturned:
                        raise KeyStoreError(
                            "hsm_unavailable", f"several tokens are labelled {token_label!r}: labels must be unique"
                        ) from None
                    except pkcs11.PKCS11Error as exc:
                        raise KeyStoreError(
                            "hsm_unavailable", f"cannot list the tokens of {module} ({type(exc).__name__})"
                        ) from None
                login = cls(module, token, cls._digest(pin))
                login.ensure(pin)  # before registering: a wrong PIN leaves nothing behind
                cls._registry[key] = login
            elif login.pid != os.getpid():
                raise KeyStoreError(
                    "hsm_unavailable", "the PKCS#11 module was loaded before a fork: load it in the process using it"
                )
            elif not hmac.compare_digest(login.pin_digest, cls._digest(pin)):
                # The token would not check it (the process is logged in already): refuse it here.
                raise KeyStoreError(
                    "hsm_unavailable",
                    f"this process is logged in to token {token_label!r} with another PIN; the PIN given is wrong",
                )
            login.users += 1
            return login

    def ensure(self, pin: str) -> None:
        """Log in, unless logged in already (after a lost session, the next call logs in again). Hold the
        registry lock."""
        if self.session is not None and self.epoch == self.hsm.epoch:
            return
        if self.session is not None:  # its handle died with a reload: forget it, never close it
            self.session = None
            self.generation += 1
        try:
            with self.hsm.calls():
                self.session = self.token.open(user_pin=pin, attribute_mapper=attribute_mapper())
                self.epoch = self.hsm.epoch
        except _PIN_ERRORS as exc:
            raise KeyStoreError(
                "hsm_unavailable", f"the HSM refused the PIN for token {self.token.label!r} ({type(exc).__name__})"
            ) from None
        except pkcs11.UserAlreadyLoggedIn:
            raise KeyStoreError(
                "hsm_unavailable",
                f"token {self.token.label!r} is already logged in by other code in this process",
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(
                "hsm_unavailable", f"cannot log in to token {self.token.label!r} ({type(exc).__name__})"
            ) from None

    def drop(self) -> None:
        """Forget the login (best effort: a lost session cannot be logged out cleanly). Hold the registry lock."""
        self.generation += 1
        session, self.session = self.session, None
        if session is not None:
            with self.hsm.calls(), contextlib.suppress(pkcs11.PKCS11Error):
                if self.epoch == self.hsm.epoch:  # an older epoch's handle may be another session's now
                    session.close()  # C_Logout, then C_CloseSession

    def reconnect(self, pin: str) -> None:
        """Before a keystore opens a new session: wait out the back-off, reload the module after a failed
        reconnection, log in. Hold the registry lock (so one thread reconnects and the others wait for it)."""
        now = time.monotonic()
        if now < self.retry_at:
            raise KeyStoreError(
                "hsm_unavailable",
                f"token {self.token.label!r} was not reachable; the next try is in {self.retry_at - now:.2f} s",
            )
        try:
            if self.failures:
                self.hsm.reload()
                self.session = None  # died with the reload
                self.generation += 1
                self.token = self._find()
            self.ensure(pin)
        except KeyStoreError:
            self.failed()
            raise
        self.failures, self.retry_at = 0, 0.0

    def failed(self) -> None:
        """A reconnection failed: the next one reloads the module, after a back-off. Hold the registry lock."""
        self.failures += 1
        wait = min(_BACKOFF_CAP_S, _BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + random.uniform(wait / 2, wait)

    def _find(self) -> Token:
        """The token again, by label: slot numbers can change once a token is put back."""
        label = self.token.label
        try:
            with self.hsm.calls():
                return pkcs11.lib(self.module).get_token(token_label=label)
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(
                "hsm_unavailable", f"token {label!r} is not in the PKCS#11 module ({type(exc).__name__})"
            ) from None

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users <= 0:
                self.drop()
                if self._registry.get((self.module, self.token.label)) is self:
                    del self._registry[(self.module, self.token.label)]


# ---------------------------------------------------------------- opened keys and the keystore


class Pkcs11VendingKey:
    """An opened DKGA04 vending key: a handle to a session copy of the token object, never the key.

    Derivations go through the keystore, which serialises them on its one session. If that session is lost
    (an HSM restart, a network HSM's idle timeout), the keystore copies the token object again on the next
    derivation, checked against the same KCV: callers may keep an opened key for the process's life.
    """

    __slots__ = ("_object", "_removed", "_store", "dkga", "kcv", "label")

    def __init__(self, store: Pkcs11KeyStore, obj: Object, label: str, kcv: str) -> None:
        self.dkga = 4
        self.label = label
        self.kcv = kcv
        self._store = store
        self._object: Object | None = obj  # None: the session copy died with its session; copy it again
        self._removed = False

    def __repr__(self) -> str:
        return f"Pkcs11VendingKey(label={self.label!r}, dkga={self.dkga}, kcv={self.kcv!r})"

    def decoder_key(self, meter: MeterNumber, d: Derivation) -> int:
        size = _dk_bytes(d.ea)
        mac = self._store._hmac(self, [dkga04_input(meter, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea)])[0]
        return int.from_bytes(mac[:size], "big")

    def decoder_keys(self, meters: Sequence[MeterNumber], d: Derivation) -> npt.NDArray[Any]:
        """Many meters of one supply group, laid out as :mod:`mita.sts.bulk` takes keys (as the software key)."""
        size = _dk_bytes(d.ea)
        inputs = [dkga04_input(m, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea) for m in meters]
        raw = b"".join(mac[:size] for mac in self._store._hmac(self, inputs))
        keys = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
        if d.ea is EA.MISTY1:
            return keys.copy()
        return keys.view(">u8").reshape(-1).astype(np.uint64)


def _dk_bytes(ea: EA) -> int:
    if ea is EA.DEA:
        raise UnsupportedError("DKGA04 is defined for EA07 and EA11 only")
    return ea.key_bits // 8


class Pkcs11KeyStore:
    """DKGA04 vending keys as non-extractable token objects of a PKCS#11 token (SoftHSM2 or an HSM).

    One keystore holds one read/write session, guarded by a lock because the vending service derives from
    several threads; opened keys are session copies of the token objects (C_CopyObject), kept for the
    keystore's life, since a session object signs about twice as fast as a token object. Keystores on the same
    token in one process share the login (see :class:`_Login`). A lost session is reopened, and the call that
    met the loss tried once more on the new one, so an HSM restart costs no failed vend when it recovers. If
    the HSM stays away (a token pulled out), calls answer ``hsm_unavailable`` at once, never sleeping, while
    reconnections back off (50 ms doubling to 2 s); each reloads the module first, so the token is found again
    once it is back, with no restart of the process.

    Create it in the process that uses it: a PKCS#11 module does not survive a fork (SoftHSM's
    ``library.reset_on_fork`` is off), so a keystore made before a fork refuses to work in the child.
    A key removed by another process stays usable in this one until this keystore is closed.
    """

    name = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        """Load the module, find the token by label (slot numbers change when a token is initialised) and log in.

        Failing here, at start-up, beats failing on the first vend: a wrong PIN, a missing token or module is
        a :class:`KeyStoreError` ``hsm_unavailable`` now.
        """
        self.module = module
        self.token_label = token_label
        self._pin = pin  # kept to log in again after a lost session; never shown (see __repr__)
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._generation = -1  # the login generation self._session was opened under
        self._epoch = -1  # the module epoch self._session was opened in (a reload kills older handles)
        self._open: dict[str, Pkcs11VendingKey] = {}
        self._closed = False
        self._login = _Login.acquire(module, token_label, pin)
        try:
            with self._lock:
                self._connect()
        except BaseException:
            self._login.release()
            raise

    @classmethod
    def from_settings(cls, hsm: HsmSettings) -> Self:
        """The keystore the settings name (``MITA_HSM_*``)."""
        pin = hsm.hsm_pin.get_secret_value() if hsm.hsm_pin is not None else ""
        env = {"MITA_HSM_MODULE": hsm.hsm_module, "MITA_HSM_TOKEN": hsm.hsm_token, "MITA_HSM_PIN": pin,
               "MITA_HSM_PIN_FILE": hsm.hsm_pin_file}  # fmt: skip
        return cls.from_env(env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """MITA_HSM_MODULE (default: SoftHSM2's), MITA_HSM_TOKEN (the token label) and MITA_HSM_PIN or
        MITA_HSM_PIN_FILE (a file holding the PIN, so it stays out of the process environment and ``ps``)."""
        env = os.environ if env is None else env
        label = env.get("MITA_HSM_TOKEN", "")
        if not label:
            raise KeyStoreError("hsm_not_configured", "set MITA_HSM_TOKEN to the label of the PKCS#11 token")
        pin = env.get("MITA_HSM_PIN", "")
        pin_file = env.get("MITA_HSM_PIN_FILE", "")
        if not pin and pin_file:
            try:
                pin = Path(pin_file).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise KeyStoreError(
                    "hsm_not_configured", f"cannot read MITA_HSM_PIN_FILE {pin_file} ({exc.strerror})"
                ) from None
        if not pin:
            raise KeyStoreError("hsm_not_configured", "set MITA_HSM_PIN or MITA_HSM_PIN_FILE (the token's user PIN)")
        return cls(env.get("MITA_HSM_MODULE") or DEFAULT_MODULE, label, pin)

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(module={self.module!r}, token={self.token_label!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the session (which destroys the session copies) and, for the token's last keystore, the login."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._reset(lost=False)
            self._open.clear()
        self._login.release()

    # ------------------------------------------------------------ the KeyStore protocol

    def put(self, sgc: str, krn: int, dkga: int, key: bytes) -> StoredKey:
        """Import a key given in clear: its one passage through this process, then it lives on the token only.

        Production keys come from the key management centre; an unwrap of a KEK-wrapped blob (AES key wrap)
        would keep even this passage out of the process, and is the next step once key loading defines one.
        Not retried after a lost session: the object may exist already, and a retry would say ``key_exists``.
        """
        _check_dkga(dkga)
        check_key(dkga, key)
        label = key_label(sgc, krn)
        hsm = self._login.hsm
        with self._lock, self._errors("import the vending key"):
            session = self._connect()
            with hsm.calls():
                if self._epoch != hsm.epoch:
                    raise pkcs11.SessionHandleInvalid()  # reloaded since _connect: report it, never retry an import
                return self._create(session, sgc, krn, dkga, label, key)

    def _create(self, session: Session, sgc: str, krn: int, dkga: int, label: str, key: bytes) -> StoredKey:
        """The token object of a new key, and its KCV. Hold the lock and the module's ``calls``."""
        # list(), not next(): a half-read search leaves C_FindObjects active on the session.
        if list(session.get_objects({Attribute.LABEL: label, Attribute.TOKEN: True})):
            raise KeyStoreError("key_exists", f"token {self.token_label!r} already holds an object {label!r}")
        obj = session.create_object(_key_template(label, key + bytes(_HMAC_KEY_BYTES - len(key))))
        try:
            kcv = _kcv(obj)
        except pkcs11.PKCS11Error:
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()  # a key without its KCV would only block a retry with key_exists
            raise
        return StoredKey(self.name, sgc, krn, dkga, kcv, handle=label)

    def generate(self, sgc: str, krn: int, dkga: int) -> StoredKey:
        """A new DKGA04 vending key from the token's random number generator (C_GenerateRandom).

        The 160 bits pass through this process once, between C_GenerateRandom and C_CreateObject: SoftHSM
        refuses to HMAC with a 20-byte key made by C_GenerateKey and cannot pad a key inside the token, and
        every STS vector uses 160-bit keys. For production, keys come from the key management centre (put).
        """
        _check_dkga(dkga)
        key_label(sgc, krn)  # refuse a bad SGC or KRN before drawing anything
        with self._lock, self._errors("draw random bytes"):
            raw = self._once_more(lambda session: session.generate_random(KEY_BYTES[dkga] * 8))
        return self.put(sgc, krn, dkga, raw)

    def open(self, stored: StoredKey) -> Pkcs11VendingKey:
        """The key as a session copy of its token object, checked against the KCV the database holds."""
        self._check_stored(stored)
        _check_dkga(stored.dkga)
        label = stored.handle or key_label(stored.sgc, stored.krn)
        with self._lock, self._errors("open the vending key"):
            cached = self._open.get(label)
            if cached is not None:
                if stored.kcv and stored.kcv != cached.kcv:
                    raise _mismatch(label)
                return cached
            copy, kcv = self._once_more(lambda session: self._attach(session, label, stored.kcv))
            opened = self._open[label] = Pkcs11VendingKey(self, copy, label, kcv)
            return opened

    def remove(self, stored: StoredKey) -> None:
        """Destroy the token object (and this process's session copy); removing a missing key is no error,
        so a retirement interrupted after the destruction can simply be retried."""
        self._check_stored(stored)
        label = stored.handle or key_label(stored.sgc, stored.krn)

        def destroy(session: Session) -> None:
            opened = self._open.get(label)
            if opened is not None and opened._object is not None:
                opened._object.destroy()
                opened._object = None
            for obj in list(session.get_objects(_token_key(label))):
                obj.destroy()

        with self._lock, self._errors("destroy the vending key"):
            self._once_more(destroy)
            opened = self._open.pop(label, None)
            if opened is not None:
                opened._removed = True

    # ------------------------------------------------------------ internals

    def _hmac(self, key: Pkcs11VendingKey, inputs: Sequence[bytes]) -> list[bytes]:
        """HMAC-SHA-256 of each input under the key, in the token; the lock is released between chunks."""

        def sign(session: Session, chunk: Sequence[bytes]) -> list[bytes]:
            if key._removed:
                raise KeyStoreError("key_not_found", f"the vending key {key.label!r} was removed")
            if key._object is None:  # its session was lost: copy the token object again, same KCV or nothing
                key._object = self._attach(session, key.label, key.kcv)[0]
            signer = _signer(key._object)
            return [signer.sign(data, mechanism=_HMAC) for data in chunk]

        out: list[bytes] = []
        for start in range(0, len(inputs), _CHUNK):
            chunk = inputs[start : start + _CHUNK]
            with self._lock, self._errors("derive decoder keys"):
                out.extend(self._once_more(functools.partial(sign, chunk=chunk)))
        return out

    def _attach(self, session: Session, label: str, kcv: str) -> tuple[Object, str]:
        """A session copy of the token object, checked against ``kcv`` when given. Hold the lock."""
        found = list(session.get_objects(_token_key(label)))
        if not found:
            raise _NotFound(label)  # or not logged in any more: private objects are invisible then
        if len(found) > 1:
            raise KeyStoreError("key_ambiguous", f"token {self.token_label!r} holds several keys {label!r}")
        if not found[0][Attribute.SENSITIVE] or found[0][Attribute.EXTRACTABLE]:
            # Not made by put(): a key that can be read out is not what this keystore promises.
            raise KeyStoreError(
                "key_unprotected", f"the token's key {label!r} is extractable or not sensitive: re-import it"
            )
        copy = found[0].copy({Attribute.TOKEN: False, Attribute.MODIFIABLE: False})
        got = _kcv(copy)
        if kcv and kcv != got:
            copy.destroy()
            raise _mismatch(label)
        return copy, got

    def _once_more(self, work: Callable[[Session], _T]) -> _T:
        """``work`` on the session; if the session turns out lost, once more on a new one. Hold the lock."""
        hsm = self._login.hsm
        for attempt in range(2):
            session = self._connect()
            try:
                with hsm.calls():
                    if self._epoch != hsm.epoch:  # reloaded since _connect: these handles are dead or others'
                        raise pkcs11.SessionHandleInvalid()
                    return work(session)
            except (*_SESSION_LOST, _NotFound) as exc:
                if attempt and isinstance(exc, _NotFound):
                    raise KeyStoreError(
                        "key_not_found", f"token {self.token_label!r} holds no key {exc.args[0]!r}"
                    ) from None
                if attempt:
                    raise  # a second loss is reported (by _errors)
                # A key not found may be a login that ended under this session (C_CloseAllSessions, an HSM's
                # restart between two calls): only a fresh login can tell, and never-found is then the answer.
                self._reset(lost=True)
        raise AssertionError("unreachable")

    def _connect(self) -> Session:
        """This keystore's session, opened (and the token logged in again) if it was lost. Hold the lock."""
        if self._closed:
            raise KeyStoreError("hsm_unavailable", f"the keystore for token {self.token_label!r} is closed")
        if self._login.pid != os.getpid():
            raise KeyStoreError(
                "hsm_unavailable", "this PKCS#11 keystore was made before a fork: create it in the process using it"
            )
        if self._session is not None and self._epoch != self._login.hsm.epoch:
            self._reset(lost=False)  # the module was reloaded: forget the dead handles
        if self._session is None:
            with _Login._registry_lock:
                login = self._login
                if login.session is None or login.epoch != login.hsm.epoch:
                    login.reconnect(self._pin)
                self._generation = login.generation
                try:
                    with login.hsm.calls():
                        self._session = login.token.open(rw=True, attribute_mapper=attribute_mapper())
                        self._epoch = login.hsm.epoch
                except pkcs11.PKCS11Error as exc:
                    login.drop()  # the login is likely gone too: the next call reconnects from the start
                    login.failed()
                    raise KeyStoreError(
                        "hsm_unavailable",
                        f"cannot open a session on token {self.token_label!r} ({type(exc).__name__})",
                    ) from None
        return self._session

    def _reset(self, *, lost: bool) -> None:
        """Forget the session; opened keys lose their session copies, which die with it. Hold the lock.

        ``lost``: a PKCS#11 call said the session or the login is gone. Unless another keystore has logged in
        again since this session was opened, the login is dropped too, and the next call logs in afresh.
        """
        for opened in self._open.values():
            opened._object = None
        session, self._session = self._session, None
        hsm = self._login.hsm
        if session is not None:
            with hsm.calls(), contextlib.suppress(pkcs11.PKCS11Error):
                if self._epoch == hsm.epoch:  # after a reload the handle's number may be another session's
                    session.close()  # no C_Logout: this session did not log in
        if lost:
            with _Login._registry_lock:
                if self._generation == self._login.generation:
                    self._login.drop()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """PKCS#11 failures as KeyStoreErrors: stable codes, the exception's class name, never a key byte."""
        try:
            yield
        except pkcs11.PKCS11Error as exc:
            name = type(exc).__name__
            if isinstance(exc, _SESSION_LOST):
                self._reset(lost=True)
                raise KeyStoreError(
                    "hsm_unavailable",
                    f"lost the session with token {self.token_label!r} trying to {action} ({name}); "
                    "the next call reconnects",
                ) from None
            if isinstance(exc, _PIN_ERRORS):
                raise KeyStoreError("hsm_unavailable", f"the HSM refused the PIN ({name})") from None
            raise KeyStoreError("hsm_error", f"the HSM refused to {action} ({name})") from None

    def _check_stored(self, stored: StoredKey) -> None:
        if stored.keystore != self.name:
            raise KeyStoreError(
                "wrong_keystore", f"the key {stored.sgc}/{stored.krn} is kept by the {stored.keystore!r} keystore"
            )


def _check_dkga(dkga: int) -> None:
    """DKGA04 only: DKGA02 is refused with the reason (module docstring), anything else is no DKGA we know."""
    if dkga == 2:
        raise KeyStoreError("keystore_unsupported", _DKGA02_REFUSED)
    if dkga != 4:
        check_key(dkga, b"")  # raises invalid_dkga


def _token_key(label: str) -> dict[Attribute, Any]:
    # TOKEN=True: session copies carry the same label and must never be mistaken for the stored key.
    return {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label, Attribute.TOKEN: True}


def _kcv(obj: Object) -> str:
    """The DKGA04 key check value, computed by the token: equal to the software keystore's for the same key."""
    return _signer(obj).sign(_KCV_INPUT, mechanism=_HMAC)[:3].hex()


def _mismatch(label: str) -> KeyStoreError:
    return KeyStoreError(
        "key_mismatch", f"the token's key {label!r} does not match the key check value the database holds"
    )


__all__ = ["DEFAULT_MODULE", "LABEL_PREFIX", "Pkcs11KeyStore", "Pkcs11VendingKey", "attribute_mapper", "key_label"]
