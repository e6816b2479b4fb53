"""One meter file, two ways in: the simulated meter serves the file ``mita meter`` uses, and notices its changes.

``mita meter enter STATE.json`` (the keypad) loads the file, enters the token and saves it; a simulated meter
serving the same file keeps the meter in memory. Without a check, the sim's next save would overwrite the keypad's
change with its stale state: the credit lost, the token's TID forgotten, and the same token accepted a second time.

:class:`MeterFile` is the sim's side of the sharing. It saves the meter as ``mita meter`` does
(:func:`mita.meter.storage.save`) and remembers the file's *signature* after its own save or load: inode,
modification time in nanoseconds, size. Every save writes a new file and renames it over the old one, so each save
is a new inode: a signature that differs means another program saved the file since. Before answering a request,
the sim stats the file (one ``os.stat``, a few microseconds) and, if the signature differs, takes the file's meter
(:meth:`mita.sim.objects.MeterObjects.catch_up`).

The two take turns: ``mita meter`` holds the file's lock (:class:`mita.meter.storage.FileLock`, ``flock`` on
``.NAME.lock`` beside it) from its load to its save, and the server holds it while it answers a request, so a
keypad entry and a remote one never interleave (the later save can no longer drop the earlier's change). The
signature would miss a change whose file reused the inode, size and modification time of the sim's own last
save (the inode freed by a later save, then a save in the same clock tick with the same size).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from mita.meter import Meter, storage
from mita.meter.errors import MeterError


class Signature(NamedTuple):
    """What tells one saved file from another: each save renames a new file (a new inode) over the old one."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)


class MeterFile:
    """A meter file the sim shares with ``mita meter``; call it (or :meth:`save`) to save the meter to it.

    ``sync=False``: saves without fsync (:func:`mita.meter.storage.save`), for load tests."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.path, self.sync = os.fspath(path), sync
        self.signature: Signature | None = None  # of the file as the sim last saved or loaded it; None: neither yet

    def __repr__(self) -> str:
        return f"MeterFile({self.path!r})"

    def __call__(self, meter: Meter) -> None:
        self.save(meter)

    def save(self, meter: Meter) -> None:
        """Save as ``mita meter`` does; the signature is the written file's, taken before its rename (a stat after
        it could already see another writer's file)."""
        self.signature = Signature.of(storage.save(meter, self.path, sync=self.sync))

    def load(self) -> Meter:
        """The file's meter (:class:`mita.meter.errors.MeterError` as :func:`mita.meter.storage.load`). The
        signature is of the file read, from its open descriptor: a save by another program while it is read makes
        the next :meth:`changed` true."""
        try:
            with open(self.path, encoding="utf-8") as f:
                seen = Signature.of(os.fstat(f.fileno()))
                text = f.read()
        except FileNotFoundError:
            return storage.load(self.path)  # its no_state error
        except UnicodeDecodeError:
            raise MeterError("corrupt_state", "the meter state file is not UTF-8 text") from None
        meter = storage.loads(text)
        self.signature = seen
        return meter

    def lock(self) -> storage.FileLock:
        """The file's lock, which ``mita meter`` takes from load to save: the server holds it while it answers a
        request (taking the file's changes, changing the meter, saving it), so the two take turns."""
        return storage.FileLock(self.path)

    def current(self) -> Signature | None:
        """The file's signature now; None if it is gone (or cannot be read)."""
        try:
            return Signature.of(os.stat(self.path))
        except OSError:
            return None

    def changed(self) -> bool:
        """Whether another program saved the file since the sim last saved or loaded it (a file that is gone has
        not changed: the sim's next save makes it again)."""
        now = self.current()
        return now is not None and now != self.signature
