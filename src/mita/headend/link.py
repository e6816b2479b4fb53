"""The head-end's link to one meter: the small interface the rest of the head-end codes against, and its
implementation on dlms-cosem 21.3.2 (MIT) over TCP with the IEC 62056-47 wrapper.

Code above this module sees :class:`Endpoint`, :func:`associate`, the :class:`Association` protocol (raw A-XDR in
and out: :mod:`mita.headend.cosem` decodes it) and :class:`LinkError` with a stable ``code``:

===========  =========  ======================================================================================
code         transient  when
===========  =========  ======================================================================================
unreachable  yes        connection refused, no route, name not found, or the meter dropped the connection
timeout      yes        connect or one request took longer than ``Endpoint.timeout``
refused      no         the association was rejected (a wrong LLS secret, an unknown client)
denied       no         the meter refused a service: a data-access-result or exception-response that is not
                        success (access denied, object undefined or unavailable, hardware fault...)
protocol     no         an answer that is malformed or not the one expected
===========  =========  ======================================================================================

Only dlms-cosem's APDU codec and connection state machine are used. The socket is this module's own
(:class:`_Wire`): dlms-cosem's ``BlockingTcpTransport`` loops forever when the meter closes the connection in the
middle of an answer (``recv`` returning ``b""``), and its timeout is per ``recv`` rather than per request.

Secrets: the LLS secret goes into the AARQ and nowhere else. dlms-cosem's ``DlmsConnection.send`` logs every APDU at
INFO and DEBUG, the AARQ with its ``authentication_value`` included: the association encodes its APDUs without it
(:meth:`_DlmsCosemAssociation._encode`, also for the CPU), and should the library's ``send`` run, its connection
logger is silenced while the AARQ is encoded (:class:`_QuietWhileAssociating`). No :class:`LinkError` message or
``repr`` holds the secret, and a LinkError never chains dlms-cosem's exception (whose text may quote an APDU): each
is raised ``from None``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from dlms_cosem import cosem, enumerations
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.wrappers import WrapperHeader
from dlms_cosem.protocol.xdlms.conformance import Conformance

from . import cosem as axdr

log = logging.getLogger("mita.headend.link")

#: code -> transient (worth retrying later). The one table of the codes.
CODES: Final[dict[str, bool]] = {
    "unreachable": True,
    "timeout": True,
    "refused": False,
    "denied": False,
    "protocol": False,
}

PUBLIC_CLIENT = 16
WRAPPER_VERSION = 1
WRAPPER_HEADER = 8
_HEADER = struct.Struct(">HHHH")  # version, source wPort, destination wPort, length
RECV_SIZE = 4096  # an answer taken in at once (GET blocks are smaller; the rest waits in the buffer)
#: The most GET blocks one value may take (a guard against a meter that never sends the last block).
MAX_BLOCKS = 4096


class LinkError(Exception):
    """A failure to talk to a meter, by a stable ``code`` (see the module's table); the message never holds a
    secret."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown link error code {code!r}")
        super().__init__(message)
        self.code = code
        self.transient = CODES[code]

    def __repr__(self) -> str:
        return f"LinkError({self.code!r}, {str(self)!r})"


@dataclass(frozen=True)
class Endpoint:
    """Where a meter answers and how to associate with it.

    With a ``secret`` the association is the management client (``client``, LLS); without one it is the public
    client 16, no security, whatever ``client`` says. ``release=False`` drops the TCP connection instead of sending
    RLRQ: gurux's RLRE is malformed (docs/notes/dlms-sim.md), and a release that fails costs a round trip."""

    host: str
    port: int
    secret: bytes | None = None
    client: int = 1
    server: int = 1
    timeout: float = 5.0
    release: bool = True

    def __repr__(self) -> str:
        secret = "None" if self.secret is None else "<set>"
        return (
            f"Endpoint(host={self.host!r}, port={self.port}, secret={secret}, client={self.client}, "
            f"server={self.server}, timeout={self.timeout}, release={self.release})"
        )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 or not self.timeout > 0:
            raise ValueError("an endpoint needs a TCP port 1-65535 and a timeout above 0 s")

    @property
    def client_sap(self) -> int:
        return self.client if self.secret is not None else PUBLIC_CLIENT


class Association(Protocol):
    """An open association: raw A-XDR values in and out (decode them with :mod:`mita.headend.cosem`)."""

    def get(self, interface: int, obis: str, attribute: int) -> bytes: ...

    def set(self, interface: int, obis: str, attribute: int, data: bytes) -> None: ...

    def action(self, interface: int, obis: str, method: int, data: bytes) -> bytes | None: ...


# ------------------------------------------------------------------------------------------------ logging


_associating: contextvars.ContextVar[bool] = contextvars.ContextVar("mita_headend_associating", default=False)


class _QuietWhileAssociating(logging.Filter):
    """Drops dlms-cosem's connection log records while this thread encodes an AARQ (they quote its secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _associating.get()


_QUIET = _QuietWhileAssociating()
for _logger in ("dlms_cosem.connection", "dlms_cosem.state", "dlms_cosem.clients.dlms_client"):
    if _QUIET not in logging.getLogger(_logger).filters:
        logging.getLogger(_logger).addFilter(_QUIET)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    token = _associating.set(True)
    try:
        yield
    finally:
        _associating.reset(token)


# ------------------------------------------------------------------------------------------------ the socket


class _Wire:
    """One TCP connection carrying wrapper frames: one request, one answer, each within ``timeout`` seconds.

    Its system calls are counted (a head-end delivery makes four requests, and these were half of the worker's
    system time): an IP address is connected without a name lookup; an answer is taken in as few ``recv`` as it
    arrives in (its header and its APDU usually in one, bytes beyond it kept for the next); the socket's timeout
    (a system call each time it is set) is set again only when a request needs more than one ``recv``, to what is
    left of its time, and back to the whole of it for the next request."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client, self.server = endpoint.client_sap, endpoint.server
        self.buffer = b""
        try:
            self.sock: socket.socket | None = _connect(endpoint.host, endpoint.port, endpoint.timeout)
        except TimeoutError:
            raise LinkError("timeout", f"no connection to {self._where} within {endpoint.timeout} s") from None
        except OSError as exc:
            raise LinkError("unreachable", f"cannot connect to {self._where}: {_os_reason(exc)}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = endpoint.timeout  # the socket's
        self.fresh = False

    @property
    def _where(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def exchange(self, apdu: bytes) -> bytes:
        """Send one APDU and return the APDU of the answer."""
        if self.sock is None:
            raise LinkError("unreachable", f"the connection to {self._where} is closed")
        deadline = time.monotonic() + self.endpoint.timeout
        header = WrapperHeader(source_wport=self.client, destination_wport=self.server, length=len(apdu))
        try:
            if self.timeout != self.endpoint.timeout:
                self.timeout = self.endpoint.timeout
                self.sock.settimeout(self.timeout)
            self.sock.sendall(header.to_bytes() + apdu)
            self.fresh = True  # the request's first recv: the socket's timeout is the request's whole time
            self._fill(WRAPPER_HEADER, deadline)
            version, source, destination, length = _HEADER.unpack_from(self.buffer)
            if (version, source, destination) != (WRAPPER_VERSION, self.server, self.client):
                raise LinkError("protocol", f"unexpected wrapper header from {self._where}: {self.buffer[:8].hex()}")
            end = WRAPPER_HEADER + length
            self._fill(end, deadline)
            answer, self.buffer = self.buffer[WRAPPER_HEADER:end], self.buffer[end:]
            return answer
        except TimeoutError:
            raise LinkError("timeout", f"no answer from {self._where} within {self.endpoint.timeout} s") from None
        except OSError as exc:
            raise LinkError("unreachable", f"connection to {self._where} lost: {_os_reason(exc)}") from None

    def _fill(self, n: int, deadline: float) -> None:
        """Receive until the buffer holds ``n`` octets, by the request's deadline."""
        assert self.sock is not None
        while len(self.buffer) < n:
            if not self.fresh:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.timeout = left
                self.sock.settimeout(left)
            self.fresh = False
            chunk = self.sock.recv(max(n - len(self.buffer), RECV_SIZE))
            if not chunk:
                raise LinkError("unreachable", f"{self._where} closed the connection")
            self.buffer += chunk

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection; to an IP address without ``getaddrinfo`` (``socket.create_connection``'s lookup)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((host, port), timeout=timeout)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# ------------------------------------------------------------------------------------------------ dlms-cosem


#: What the head-end proposes: GET/SET/ACTION, GET in blocks, selective access. Not general block transfer
#: (dlms-cosem 21.3.2 cannot read it) nor ciphering.
CONFORMANCE = dict(
    general_protection=False,
    general_block_transfer=False,
    delta_value_encoding=False,
    attribute_0_supported_with_set=False,
    priority_management_supported=True,
    attribute_0_supported_with_get=False,
    block_transfer_with_get_or_read=True,
    block_transfer_with_set_or_write=False,
    block_transfer_with_action=False,
    multiple_references=False,
    data_notification=False,
    access=False,
    get=True,
    set=True,
    selective_access=True,
    event_notification=False,
    action=True,
)

T = TypeVar("T")


def _library(what: str, step: Callable[[], T]) -> T:
    """One call into dlms-cosem: whatever it raises (it raises ValueError, KeyError, IndexError, its own
    exceptions... on a malformed answer) becomes a ``protocol`` LinkError naming only the exception's type."""
    try:
        return step()
    except LinkError:
        raise
    except Exception as exc:  # the library boundary: any exception of theirs is a protocol failure here
        raise LinkError("protocol", f"{what}: {type(exc).__name__}") from None


def _cosem_attribute(interface: int, obis: str, attribute: int) -> Any:
    return cosem.CosemAttribute(enumerations.CosemInterface(interface), cosem.Obis(*axdr.obis(obis)), attribute)


def _cosem_method(interface: int, obis: str, method: int) -> Any:
    return cosem.CosemMethod(enumerations.CosemInterface(interface), cosem.Obis(*axdr.obis(obis)), method)


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


class _DlmsCosemAssociation:
    """:class:`Association` over dlms-cosem's connection state machine and a :class:`_Wire`."""

    def __init__(self, endpoint: Endpoint, wire: _Wire) -> None:
        self.endpoint, self.wire = endpoint, wire
        lls = endpoint.secret is not None
        self.connection = DlmsConnection(
            client_system_title=None,
            authentication_method=enumerations.AuthenticationMechanism.LLS if lls else None,
            password=endpoint.secret,
            conformance=Conformance(**CONFORMANCE),
        )
        self.associated = False
        self.usable = True  # False after a failure mid-request: the connection's state is unknown, do not release

    def __repr__(self) -> str:
        return f"<association {self.endpoint!r}>"

    def _encode(self, apdu: Any) -> bytes:
        """What ``DlmsConnection.send`` does with an APDU (the state machine moved on, the octets, the PDU size
        checked), without its two log lines: each formats the whole APDU (its repr) even when nobody logs it, and
        at INFO, where ``mita worker`` logs, one line per request went to the worker's log (0.2 ms of the
        worker's CPU per head-end delivery). Only the plain path: the head-end neither ciphers nor uses a
        pre-established association, and for either the library's own ``send`` runs (a canary test keeps
        ``send`` as this reads it)."""
        connection = self.connection
        if connection.use_protection or connection.is_pre_established:
            return bytes(connection.send(apdu))
        connection.state.process_event(apdu)
        out = bytes(apdu.to_bytes())
        if len(out) > connection.max_pdu_size:
            raise LinkError("protocol", f"{type(apdu).__name__} of {len(out)} octets, above the PDU size agreed")
        return out

    def _request(self, what: str, apdu: Any) -> Any:
        """Send one APDU and return the APDU answered, every failure a LinkError."""
        try:
            if isinstance(apdu, acse.ApplicationAssociationRequest):
                with _quiet():
                    out = _library(what, lambda: self._encode(apdu))
            else:
                out = _library(what, lambda: self._encode(apdu))
            answer = self.wire.exchange(out)
            self.connection.receive_data(answer)
            return _library(what, self.connection.next_event)
        except LinkError:
            self.usable = False
            raise

    # ------------------------------------------------------------ ACSE

    def open(self) -> None:
        aare = self._request("association", self.connection.get_aarq())
        if isinstance(aare, xdlms.ExceptionResponse):
            raise LinkError("refused", f"association refused: {_name(aare.service_error)}")
        if not isinstance(aare, acse.ApplicationAssociationResponse):
            raise LinkError("protocol", f"answer to AARQ is a {type(aare).__name__}, not an AARE")
        if aare.result is not enumerations.AssociationResult.ACCEPTED:
            reason = _name(aare.result_source_diagnostics)
            raise LinkError("refused", f"association rejected ({_name(aare.result)}, {reason})")
        self.associated = True

    def close(self) -> None:
        """Release if asked to (and if it can still be), then drop the connection. Never raises: an RLRE that does
        not parse (gurux's has a wrong length octet, docs/notes/dlms-sim.md) is logged at DEBUG and ignored."""
        try:
            if self.endpoint.release and self.associated and self.usable:
                rlre = self._request("release", self.connection.get_rlrq())
                if not isinstance(rlre, acse.ReleaseResponse):
                    raise LinkError("protocol", f"answer to RLRQ is a {type(rlre).__name__}, not an RLRE")
        except Exception as exc:  # leaving must never raise; the connection is dropped below either way
            reason = f"{exc.code}: {exc}" if isinstance(exc, LinkError) else type(exc).__name__
            log.debug("release not completed (%s); connection dropped", reason)
        finally:
            self.wire.close()

    # ------------------------------------------------------------ xDLMS

    def get(self, interface: int, obis: str, attribute: int) -> bytes:
        what = f"GET {interface}/{obis}/{attribute}"
        target = _cosem_attribute(interface, obis, attribute)
        answer = self._request(what, xdlms.GetRequestNormal(cosem_attribute=target))
        data = bytearray()
        for expected in range(1, MAX_BLOCKS + 1):
            if isinstance(answer, xdlms.GetResponseNormal):
                return bytes(answer.data)
            if isinstance(answer, (xdlms.GetResponseNormalWithError, xdlms.GetResponseLastBlockWithError)):
                raise LinkError("denied", f"{what}: {_name(answer.error)}")
            if isinstance(answer, xdlms.GetResponseLastBlock):
                return bytes(data + answer.data)
            if not isinstance(answer, xdlms.GetResponseWithBlock):
                self._unexpected(what, answer)
            if answer.block_number != expected:
                raise LinkError("protocol", f"{what}: block {answer.block_number}, expected {expected}")
            data += answer.data
            if len(data) > axdr.MAX_VALUE_OCTETS:
                raise LinkError("protocol", f"{what}: value larger than {axdr.MAX_VALUE_OCTETS} octets")
            following = xdlms.GetRequestNext(
                invoke_id_and_priority=answer.invoke_id_and_priority, block_number=answer.block_number
            )
            answer = self._request(what, following)
        raise LinkError("protocol", f"{what}: more than {MAX_BLOCKS} blocks")

    def set(self, interface: int, obis: str, attribute: int, data: bytes) -> None:
        what = f"SET {interface}/{obis}/{attribute}"
        target = _cosem_attribute(interface, obis, attribute)
        answer = self._request(what, xdlms.SetRequestNormal(cosem_attribute=target, data=bytes(data)))
        if not isinstance(answer, xdlms.SetResponseNormal):
            self._unexpected(what, answer)
        if answer.result != enumerations.DataAccessResult.SUCCESS:
            raise LinkError("denied", f"{what}: {_name(answer.result)}")

    def action(self, interface: int, obis: str, method: int, data: bytes) -> bytes | None:
        what = f"ACTION {interface}/{obis}/{method}"
        target = _cosem_method(interface, obis, method)
        answer = self._request(what, xdlms.ActionRequestNormal(cosem_method=target, data=bytes(data)))
        if isinstance(answer, xdlms.ActionResponseNormalWithError):
            raise LinkError("denied", f"{what}: {_name(answer.status)}, {_name(answer.error)}")
        if not isinstance(answer, (xdlms.ActionResponseNormal, xdlms.ActionResponseNormalWithData)):
            self._unexpected(what, answer)
        if answer.status != enumerations.ActionResultStatus.SUCCESS:
            raise LinkError("denied", f"{what}: {_name(answer.status)}")
        returned = getattr(answer, "data", None)
        return bytes(returned) if returned is not None else None

    def _unexpected(self, what: str, answer: Any) -> None:
        if isinstance(answer, xdlms.ExceptionResponse):
            raise LinkError("denied", f"{what}: {_name(answer.state_error)}, {_name(answer.service_error)}")
        self.usable = False
        raise LinkError("protocol", f"{what}: unexpected answer {type(answer).__name__}")


@contextlib.contextmanager
def associate(endpoint: Endpoint) -> Iterator[Association]:
    """Connect and associate; at exit release (if ``endpoint.release``) or just drop TCP, never raising on close.

    Raises :class:`LinkError` (``unreachable``, ``timeout``, ``refused``, ``protocol``) when no association is
    made; inside the block, the association's calls raise it too."""
    wire = _Wire(endpoint)
    association = _DlmsCosemAssociation(endpoint, wire)
    try:
        association.open()
        yield association
    finally:
        association.close()
