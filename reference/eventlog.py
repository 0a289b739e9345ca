"""One stream's retained ``sync_event`` rows, stored by column (issue 10: memory per event).

A retained event used to be a :class:`~spec.values.SyncEvent` object with nine fields of its
own -- the payload and its ``sha256:<hex>`` hash as Python strings, a copy of the stream id and
key per event, boxed integers -- plus a list slot and an ``idempotency_key -> seq`` dict entry:
~600 bytes for a 150-byte payload.  :class:`StreamLog` keeps the same rows as columns instead
and builds a ``SyncEvent`` only when one is read (a dedupe hit, retention).  A resume snapshot
takes :meth:`StreamLog.retained_rows`: the rows as they are at that moment, built only if read,
whose stored fields the wire layer writes straight to BSATN a chunk at a time
(:meth:`RetainedRows.runs`; a chunk's buffers change in place only by appends past their end, so
the wire keeps a chunk's encoded rows and serves later runs from them: ADR-0020, ADR-0024;
docs/performance.md, "Replay from the column store").

Events are stored in chunks of :data:`CHUNK` (positions ``c * CHUNK .. c * CHUNK + CHUNK - 1``
are chunk ``c``), each chunk two buffers:

* ``_data[c]`` (a ``bytearray``): per event, the 32 raw bytes of the payload hash, the
  idempotency key and the canonical payload, both UTF-8, back to back;
* ``_cols[c]`` (an ``array('q')``), four integers per event: where its bytes end in the chunk's
  data, ``committed_at``, ``tx_offset`` and ``meta`` = key length | producer number << 20.

Chunks, not one buffer per stream: a buffer that grows by reallocation leaves its earlier
copies as holes in the C heap, which the allocator keeps (measured: ~150 bytes per event of the
server's RSS, returned only by ``malloc_trim``); chunks stop growing at a few tens of KiB, and
retention drops whole chunks instead of moving the rest of the buffers.  Beside the chunks: the
stream id once; producers once per distinct identity (``_producers``, numbered); epochs as runs
(``_run_seqs``/``_run_epochs``: the epoch from that seq on), since a stream's epoch changes only
at a reset or an unclean restart; and the ``(stream_id, idempotency_key)`` unique index as an
open-addressing table of ``seq - _tbase + 1`` (``array('I')``, 0 empty, ``_TOMB`` deleted)
probed with the hash of the key's bytes and confirmed against the key in the data: a few bytes
per event where a dict entry, the key string and a boxed seq took ~130.

Seqs are contiguous (``seq = floor + position - _head``), so the seq is not stored.  Retention
drops a prefix: the ``_head`` dropped events at the front of chunk 0 stay as dead slots until the
chunk holds nothing else, then the chunk goes (a rollback of a drop revives the dead slot).  A
rollback of an append pops the last event.

A row that does not round-trip through the columns exactly -- a hash not of the ``sha256:`` +
64 lowercase hex form, an integer out of the columns' range, a string that is not valid UTF-8
(lone surrogates) -- is kept whole in ``_odd`` (by seq, its key in ``_odd_keys``), so the store
gives back the rows it was given, whatever they are; the engine's own rows never take that
path.  ``tests/reference/test_eventlog.py`` drives the store and a plain list-and-dict model with
the same random operations (odd rows included) and compares every read.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import overload

from spec.errors import LocalProtocolError
from spec.values import SyncEvent

_STRIDE = 4  # _cols per event: end, committed_at, tx_offset, meta
CHUNK_BITS = 8
CHUNK = 1 << CHUNK_BITS  # events per chunk
_IN_CHUNK = CHUNK - 1
_KEY_BITS = 20
_KEY_MASK = (1 << _KEY_BITS) - 1
_PRODUCER_LIMIT = 1 << 40
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U64 = (1 << 64) - 1
_TOMB = 0xFFFFFFFF
_HASH_PREFIX = "sha256:"


def _encodable(ev: SyncEvent, stream_id: str) -> tuple[bytes, int] | None:
    """``ev``'s hash, key and payload bytes for ``_data`` and the key's length, or None if some
    field would not come back equal from the columns (the row is then kept whole)."""
    h = ev.payload_hash
    try:
        if not (h.startswith(_HASH_PREFIX) and len(h) == 71 and _I64_MIN <= ev.committed_at <= _I64_MAX
                and 0 <= ev.tx_offset <= _I64_MAX and 0 <= ev.epoch <= _U64 and ev.stream_id == stream_id
                and type(ev.producer) is str):
            return None
        raw = bytes.fromhex(h[7:])
        kb = ev.idempotency_key.encode("utf-8")
        pb = ev.payload.encode("utf-8")
    except (TypeError, AttributeError, ValueError, UnicodeEncodeError):
        return None
    if raw.hex() != h[7:] or len(kb) > _KEY_MASK or type(ev.idempotency_key) is not str \
            or type(ev.payload) is not str:  # fromhex also takes upper case and spaces
        return None
    return raw + kb + pb, len(kb)


class StreamLog:
    """The retained events of one stream: ``floor`` is the seq of the first one."""

    __slots__ = (
        "_cols",
        "_data",
        "_head",
        "_miss",
        "_odd",
        "_odd_keys",
        "_producer_no",
        "_producers",
        "_run_epochs",
        "_run_seqs",
        "_size",
        "_table",
        "_tbase",
        "_tfill",
        "floor",
        "stream_id",
    )

    def __init__(self, stream_id: str, floor: int = 1) -> None:
        self.stream_id = stream_id
        self.floor = floor
        self._reset()

    def _reset(self) -> None:
        self._head = 0  # dead events at the front of chunk 0
        self._size = 0  # positions in the chunks, dead ones included
        self._data: list[bytearray] = []
        self._cols: list[array[int]] = []
        self._producers: list[str] = []
        self._producer_no: dict[str, int] = {}
        self._run_seqs: list[int] = []
        self._run_epochs: list[int] = []
        self._table = array("I", bytes(4 * 8))
        self._tbase = self.floor
        self._tfill = 0  # live entries + tombstones
        self._miss: tuple[bytes, int] | None = None  # the last key looked up and not found, and its free slot
        self._odd: dict[int, SyncEvent] | None = None
        self._odd_keys: dict[str, int] | None = None

    @classmethod
    def of(cls, stream_id: str, floor: int, events: Sequence[SyncEvent]) -> StreamLog:
        """A log holding ``events``, whose seqs must run from ``floor`` on and keys differ."""
        log = cls(stream_id, floor)
        for ev in events:
            if ev.stream_id != stream_id or ev.seq != floor + len(log):
                raise LocalProtocolError(f"event {ev.stream_id}/{ev.seq} is not the next of {stream_id}")
            log.append(ev)
        return log

    # --- reads ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size - self._head

    @property
    def events(self) -> EventSeq:
        """The retained events, oldest first (a read-only sequence; each read builds the row)."""
        return EventSeq(self)

    @property
    def by_key(self) -> KeyIndex:
        """The ``idempotency_key -> seq`` index (a read-only mapping over the index itself)."""
        return KeyIndex(self)

    def get(self, seq: int) -> SyncEvent | None:
        i = seq - self.floor
        return self._event(self._head + i) if 0 <= i < self._size - self._head else None

    def after(self, watermark: int) -> list[SyncEvent]:
        return self._events_from(max(0, watermark + 1 - self.floor))

    def seq_of(self, key: str) -> int | None:
        """The seq of the retained event with this idempotency key, if any."""
        if self._odd_keys is not None and key in self._odd_keys:
            return self._odd_keys[key]
        try:
            kb = key.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            return None
        p, slot = self._probe(kb)
        if p < 0:
            self._miss = (kb, slot)  # an append of this key follows (dedupe, then insert): one probe
            return None
        return p - self._head + self.floor

    def _event(self, p: int) -> SyncEvent:
        """The event at position ``p`` of the chunks."""
        seq = self.floor + p - self._head
        if self._odd is not None:
            odd = self._odd.get(seq)
            if odd is not None:
                return odd
        cols = self._cols[p >> CHUNK_BITS]
        data = self._data[p >> CHUNK_BITS]
        j = (p & _IN_CHUNK) * _STRIDE
        start = cols[j - _STRIDE] if j else 0
        meta = cols[j + 3]
        kend = start + 32 + (meta & _KEY_MASK)
        epochs = self._run_epochs
        epoch = epochs[0] if len(epochs) == 1 else epochs[bisect_right(self._run_seqs, seq) - 1]
        return SyncEvent(self.stream_id, epoch, seq, data[start + 32:kend].decode("utf-8"),
                         _HASH_PREFIX + data[start:start + 32].hex(), data[kend:cols[j]].decode("utf-8"),
                         self._producers[meta >> _KEY_BITS], cols[j + 1], cols[j + 2])

    def retained_rows(self, watermark: int, epoch: int) -> RetainedRows:
        """The retained events with seq > ``watermark`` and this epoch, as they are now (later
        changes to the log do not show), rows built only when read: a resume snapshot's rows,
        which the wire layer encodes from the columns (:meth:`RetainedRows.columns`)."""
        view = self._view()
        first = self._head + max(0, watermark + 1 - self.floor)  # the first position in range
        segments: list[tuple[int, int]] = []
        seqs, epochs = self._run_seqs, self._run_epochs
        for k, e in enumerate(epochs):  # a column row's epoch is its run's
            if e != epoch:
                continue
            lo = max(first, seqs[k] - self.floor + self._head)
            hi = self._size if k + 1 == len(seqs) else min(self._size, seqs[k + 1] - self.floor + self._head)
            if lo < hi:
                segments.append((lo, hi))
        if self._odd:  # a row kept whole has its own epoch, whatever the runs say
            odd_at = {seq - self.floor + self._head: ev.epoch == epoch for seq, ev in self._odd.items()}
            ps = [p for p in range(first, self._size)
                  if (odd_at[p] if p in odd_at else any(lo <= p < hi for lo, hi in segments))]
            segments = [(p, p + 1) for p in ps]
        return RetainedRows(view, tuple(segments))

    def frozen(self, watermark: int | None = None, upto: int | None = None) -> RetainedRows:
        """The retained events (those with seq > ``watermark``, if given, and seq <= ``upto``, if
        given: a page, ADR-0042) as they are now, rows
        built only when read: later appends, retention drops, rollbacks and compaction do not show
        (the view shares the chunks, which change in place only by appends past its end).  A
        one-off read takes its ``sync_event`` rows this way, then matches them a slice at a time
        with commits in between (``reference.engine.Read``, ADR-0038).  Costs a copy of the
        stream's chunk lists (one slot per :data:`CHUNK` events), not a row."""
        view = self._view()
        first = self._head + (0 if watermark is None else max(0, watermark + 1 - self.floor))
        # RetainedRows.runs reads a segment a chunk at a time as rows of one epoch from the columns:
        # a segment ends where an epoch's run starts, and a row kept whole (its slot in the columns
        # holds nothing) is a segment of its own
        base = self._head - self.floor
        end = self._size if upto is None else max(self._head, min(self._size, upto + 1 + base))
        cuts = {seq + base for seq in self._run_seqs[1:]}
        if self._odd:
            cuts.update(p for seq in self._odd for p in (seq + base, seq + base + 1))
        segments: list[tuple[int, int]] = []
        lo = first
        for cut in sorted(cuts):
            if lo < cut < end:
                segments.append((lo, cut))
                lo = cut
        if lo < end:
            segments.append((lo, end))
        return RetainedRows(view, tuple(segments))

    def _view(self) -> StreamLog:
        """A read-only copy of this log as it is now, sharing its chunks (no key index, no writes)."""
        view = StreamLog.__new__(StreamLog)
        view.stream_id, view.floor, view._head, view._size = self.stream_id, self.floor, self._head, self._size
        # chunks are never changed in place but by appends past the end (see copy): share them
        view._data, view._cols = self._data[:], self._cols[:]
        view._producers = self._producers[:]
        view._run_seqs, view._run_epochs = self._run_seqs[:], self._run_epochs[:]
        view._odd = None if self._odd is None else dict(self._odd)
        return view

    def captured(self) -> EventSeq:
        """The retained events as they are now, for a snapshot image: a read-only view sharing the
        chunks (:meth:`_view`; later appends, drops, rollbacks and renumberings do not show), read by
        :meth:`EventSeq.values` as the file is written.  Costs the chunk lists' copies, not a row,
        nor the key index :meth:`copy` also copies."""
        return EventSeq(self._view())

    def values(self, start: int = 0, stop: int | None = None) -> list[tuple[object, ...]]:
        """The retained events ``start..stop-1`` (positions from the oldest) as their column values
        in field order -- ``reference.log.row_values`` of each row -- read from the columns without
        building the rows (a snapshot writes these)."""
        n = self._size - self._head
        start, stop = max(0, start), (n if stop is None else min(stop, n))
        out: list[tuple[object, ...]] = []
        if start >= stop:
            return out
        sid, odd, producers = self.stream_id, self._odd, self._producers
        epochs, run_seqs = self._run_epochs, self._run_seqs
        one_epoch = epochs[0] if len(epochs) == 1 else None
        base = self.floor - self._head  # the seq of position 0
        append = out.append
        p, end_p = self._head + start, self._head + stop
        while p < end_p:
            c = p >> CHUNK_BITS
            cols, data = self._cols[c], self._data[c]
            chunk_stop = min(end_p, (c + 1) << CHUNK_BITS)
            j = (p & _IN_CHUNK) * _STRIDE
            begin = cols[j - _STRIDE] if j else 0
            for q in range(p, chunk_stop):
                seq = base + q
                end = cols[j]
                ev = odd.get(seq) if odd else None
                if ev is not None:
                    append((ev.stream_id, ev.epoch, ev.seq, ev.idempotency_key, ev.payload_hash, ev.payload,
                            ev.producer, ev.committed_at, ev.tx_offset))
                else:
                    meta = cols[j + 3]
                    kend = begin + 32 + (meta & _KEY_MASK)
                    epoch = one_epoch if one_epoch is not None else epochs[bisect_right(run_seqs, seq) - 1]
                    append((sid, epoch, seq, data[begin + 32:kend].decode("utf-8"),
                            _HASH_PREFIX + data[begin:begin + 32].hex(), data[kend:end].decode("utf-8"),
                            producers[meta >> _KEY_BITS], cols[j + 1], cols[j + 2]))
                begin = end
                j += _STRIDE
            p = chunk_stop
        return out

    def _events_from(self, i: int) -> list[SyncEvent]:
        """Events ``i..`` (positions counted from the first retained event)."""
        event = self._event
        return [event(p) for p in range(self._head + max(0, i), self._size)]

    def _key_bytes(self, p: int) -> bytes:
        cols = self._cols[p >> CHUNK_BITS]
        j = (p & _IN_CHUNK) * _STRIDE
        start = (cols[j - _STRIDE] if j else 0) + 32
        return bytes(self._data[p >> CHUNK_BITS][start:start + (cols[j + 3] & _KEY_MASK)])

    # --- writes (Db calls these; the check of seq order is Db's) -----------------------------------

    def append(self, ev: SyncEvent) -> None:
        """Add ``ev`` as the newest event (its seq must be ``floor + len``); a key the log already
        holds raises :class:`LocalProtocolError` and changes nothing."""
        if self._size == self._head:  # empty
            self.floor = ev.seq
            self._reset()
        enc = _encodable(ev, self.stream_id)
        slot = self._slot(ev, enc)
        if enc is not None:  # the producer's number before anything changes: it is the last check that can raise
            no = self._producer_no.get(ev.producer)
            pmeta = self._producer(ev.producer) if no is None else no << _KEY_BITS
        if not self._size & _IN_CHUNK:
            if self._data:  # the last chunk is full: drop its growth slack (~10 %)
                self._data[-1] = bytearray(self._data[-1])
                self._cols[-1] = array("q", self._cols[-1])
            self._data.append(bytearray())
            self._cols.append(array("q"))
        data = self._data[-1]
        end = len(data)
        self._size += 1
        if enc is None:
            self._cols[-1].extend((end, 0, 0, 0))
            self._keep_odd(ev)
            return
        encoded, klen = enc
        data += encoded
        self._cols[-1].extend((end + len(encoded), ev.committed_at, ev.tx_offset, klen | pmeta))
        epochs = self._run_epochs
        if not epochs or epochs[-1] != ev.epoch:
            self._run_seqs.append(ev.seq)
            epochs.append(ev.epoch)
        self._miss = None
        table = self._table
        if table[slot] == 0:
            self._tfill += 1
        table[slot] = ev.seq - self._tbase + 1

    def pop_first(self) -> SyncEvent:
        """Drop the oldest event (retention) and return it."""
        ev = self._event(self._head)
        self._unindex(ev)
        self._head += 1
        self.floor += 1
        if self._size == self._head:
            self._reset()
            return ev
        while len(self._run_seqs) > 1 and self._run_seqs[1] <= self.floor:
            del self._run_seqs[0], self._run_epochs[0]
        if self._head == CHUNK:  # chunk 0 holds only dropped events
            del self._data[0], self._cols[0]
            self._head = 0
            self._size -= CHUNK
            self._renumber_producers()
        return ev

    def pop_last(self) -> SyncEvent:
        """Drop the newest event (the rollback of an append) and return it."""
        p = self._size - 1
        ev = self._event(p)
        self._unindex(ev)
        j = (p & _IN_CHUNK) * _STRIDE
        if j:  # new objects, not in place: a copy may share this chunk (see copy)
            self._data[-1] = self._data[-1][:self._cols[-1][j - _STRIDE]]
            self._cols[-1] = self._cols[-1][:j]
        else:
            self._data.pop()
            self._cols.pop()
        self._size -= 1
        if self._run_seqs and self._run_seqs[-1] == ev.seq:
            self._run_seqs.pop()
            self._run_epochs.pop()
        if self._size == self._head:
            self._reset()
        return ev

    def push_first(self, ev: SyncEvent) -> None:
        """Put back the event just before the oldest (the rollback of a retention drop)."""
        if self._size == self._head:
            self.append(ev)
            return
        if ev.stream_id != self.stream_id or ev.seq != self.floor - 1:
            raise LocalProtocolError(f"event {ev.stream_id}/{ev.seq} is not just before {self.stream_id}/{self.floor}")
        enc = _encodable(ev, self.stream_id)
        slot = self._slot(ev, enc)
        if enc is None:
            self._write_front(b"", (0, 0, 0))
            self.floor -= 1
            self._keep_odd(ev)
            return
        encoded, klen = enc
        meta = klen | self._producer(ev.producer)
        p = self._head - 1
        revive = False
        if p >= 0:
            cols, data = self._cols[0], self._data[0]
            j = p * _STRIDE
            start = cols[j - _STRIDE] if j else 0
            revive = cols[j:j + _STRIDE] == array("q", (start + len(encoded), ev.committed_at, ev.tx_offset, meta)) \
                and data[start:start + len(encoded)] == encoded
        if revive:
            self._head = p  # the dead slot still holds it
        else:
            self._write_front(encoded, (ev.committed_at, ev.tx_offset, meta))
        self.floor -= 1
        if not self._run_epochs:
            self._run_seqs, self._run_epochs = [self.floor], [ev.epoch]
        elif self._run_epochs[0] == ev.epoch:
            self._run_seqs[0] = min(self._run_seqs[0], self.floor)
        else:
            self._run_seqs[0] = max(self._run_seqs[0], self.floor + 1)
            self._run_seqs.insert(0, self.floor)
            self._run_epochs.insert(0, ev.epoch)
        self._miss = None
        if self._table[slot] == 0:
            self._tfill += 1
        self._table[slot] = self.floor - self._tbase + 1

    def relabel(self, old_epoch: int, new_epoch: int) -> None:
        """Every retained event of ``old_epoch`` moves to ``new_epoch`` (seqs, keys unchanged)."""
        epochs = [new_epoch if e == old_epoch else e for e in self._run_epochs]
        seqs: list[int] = []
        merged: list[int] = []
        for s, e in zip(self._run_seqs, epochs, strict=True):
            if not merged or merged[-1] != e:
                seqs.append(s)
                merged.append(e)
        self._run_seqs, self._run_epochs = seqs, merged
        if self._odd is not None:
            for seq, ev in list(self._odd.items()):
                if ev.epoch == old_epoch:
                    self._odd[seq] = replace(ev, epoch=new_epoch)

    def copy(self) -> StreamLog:
        """An independent copy (a snapshot image reads it while this one goes on changing).  It
        shares every chunk but the last: a chunk is changed in place only while it is the last one
        being appended to; anything else that changes a chunk (a rollback, a write in front, a
        renumbering) puts a changed copy in its place.  So a copy costs the last chunk and the
        key index, not the whole log."""
        other = StreamLog(self.stream_id, self.floor)
        other._head, other._size = self._head, self._size
        other._data, other._cols = self._data[:], self._cols[:]
        if other._data:
            other._data[-1], other._cols[-1] = self._data[-1][:], self._cols[-1][:]
        other._producers, other._producer_no = self._producers[:], dict(self._producer_no)
        other._run_seqs, other._run_epochs = self._run_seqs[:], self._run_epochs[:]
        other._table, other._tbase, other._tfill = self._table[:], self._tbase, self._tfill
        other._odd = None if self._odd is None else dict(self._odd)
        other._odd_keys = None if self._odd_keys is None else dict(self._odd_keys)
        return other

    # --- internals -----------------------------------------------------------------------------

    def _write_front(self, encoded: bytes, ints: tuple[int, int, int]) -> None:
        """Write an event into the dead slot just before the first live one (a fresh chunk of dead
        slots in front when chunk 0 has none), whatever that slot held."""
        if self._head == 0:
            self._data.insert(0, bytearray())
            self._cols.insert(0, array("q", bytes(8 * _STRIDE * CHUNK)))
            self._head = CHUNK
            self._size += CHUNK
        p = self._head - 1
        cols = self._cols[0][:]  # changed copies (a snapshot's copy may share chunk 0)
        j = p * _STRIDE
        old_end = cols[j]
        delta = len(encoded) - old_end
        data = bytearray(encoded) + self._data[0][old_end:]  # the dead slots before it become empty
        for k in range(j + _STRIDE, len(cols), _STRIDE):
            cols[k] += delta
        for k in range(0, j, _STRIDE):
            cols[k] = 0
        cols[j:j + _STRIDE] = array("q", (len(encoded), *ints))
        self._data[0], self._cols[0] = data, cols
        self._head = p

    def _producer(self, producer: str) -> int:
        """The producer's number, shifted into place for ``meta``."""
        no = self._producer_no.get(producer)
        if no is None:
            if len(self._producers) >= _PRODUCER_LIMIT:  # 2^40 identities in one stream
                raise LocalProtocolError("too many producers in one stream")
            no = self._producer_no[producer] = len(self._producers)
            self._producers.append(producer)
        return no << _KEY_BITS

    def _renumber_producers(self) -> None:
        """Forget producers no stored slot names any more (checked when a chunk goes)."""
        if len(self._producers) <= 16:
            return
        used = sorted({m >> _KEY_BITS for cols in self._cols for m in cols[3::_STRIDE]})
        if 2 * len(used) >= len(self._producers):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self._producers = [self._producers[old] for old in used]
        self._producer_no = {p: i for i, p in enumerate(self._producers)}
        for c, shared in enumerate(self._cols):
            cols = shared[:]  # a changed copy (a snapshot's copy may share the chunk)
            for j in range(3, len(cols), _STRIDE):
                meta = cols[j]
                cols[j] = (meta & _KEY_MASK) | renumber[meta >> _KEY_BITS] << _KEY_BITS
            self._cols[c] = cols

    def _keep_odd(self, ev: SyncEvent) -> None:
        if self._odd is None or self._odd_keys is None:
            self._odd, self._odd_keys = {}, {}
        self._odd[ev.seq] = ev
        self._odd_keys[ev.idempotency_key] = ev.seq

    def _unindex(self, ev: SyncEvent) -> None:
        self._miss = None
        if self._odd is not None and self._odd_keys is not None and self._odd.get(ev.seq) is ev:
            del self._odd[ev.seq]
            del self._odd_keys[ev.idempotency_key]
            return
        table = self._table
        mask = len(table) - 1
        want = ev.seq - self._tbase + 1
        perturb = hash(ev.idempotency_key.encode("utf-8")) & _U64
        i = perturb & mask
        while table[i] != want:
            if table[i] == 0:
                raise LocalProtocolError(f"event {self.stream_id}/{ev.seq} is not in the key index")
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask
        table[i] = _TOMB

    def _find(self, kb: bytes) -> int:
        """The position of the live event whose key bytes are ``kb``, else -1."""
        return self._probe(kb)[0]

    def _probe(self, kb: bytes) -> tuple[int, int]:
        """Look the key bytes ``kb`` up in the index: (the position of the live event holding them
        or -1, the slot a new entry for them would take)."""
        table = self._table
        mask = len(table) - 1
        perturb = hash(kb) & _U64
        i = perturb & mask
        chunks, datas = self._cols, self._data
        off = self.floor - self._head - self._tbase + 1  # an entry v is at position v - off
        n = len(kb)
        free = -1
        while True:
            v = table[i]
            if v == 0:
                return -1, (i if free < 0 else free)
            if v == _TOMB:
                if free < 0:
                    free = i
            else:
                p = v - off
                cols = chunks[p >> CHUNK_BITS]
                j = (p & _IN_CHUNK) * _STRIDE
                if cols[j + 3] & _KEY_MASK == n:
                    start = (cols[j - _STRIDE] if j else 0) + 32
                    if datas[p >> CHUNK_BITS][start:start + n] == kb:
                        return p, i
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask

    def _slot(self, ev: SyncEvent, enc: tuple[bytes, int] | None) -> int:
        """The index slot for a new event ``ev`` (-1: it is kept whole, its key in ``_odd_keys``);
        raises if the log holds its key.  Rebuilds the index first when it is full or ``ev.seq``
        is out of the entries' range."""
        if self._odd_keys is not None and ev.idempotency_key in self._odd_keys:
            raise LocalProtocolError(f"duplicate idempotency key {ev.idempotency_key}")
        if enc is None:
            if self.seq_of(ev.idempotency_key) is not None:
                raise LocalProtocolError(f"duplicate idempotency key {ev.idempotency_key}")
            return -1
        if (self._tfill + 1) * 3 > len(self._table) * 2 or not 0 < ev.seq - self._tbase + 1 < _TOMB:
            self._rehash(min(ev.seq, self.floor))
        kb = enc[0][32:32 + enc[1]]
        if self._miss is not None and self._miss[0] == kb:  # the index has not changed since that lookup
            return self._miss[1]
        found, slot = self._probe(kb)
        if found >= 0:
            raise LocalProtocolError(f"duplicate idempotency key {ev.idempotency_key}")
        return slot

    def _rehash(self, tbase: int) -> None:
        """Rebuild the key index from the live events, at most half full, entries from ``tbase``.

        A chunk at a time: its data copied once to ``bytes`` (whose slices are the keys hashed, with
        no second copy), each event's start the previous one's end (as :meth:`values` reads them)."""
        head, size = self._head, self._size
        first = self.floor - head
        odd = self._odd or None
        count = size - head - (sum(1 for p in range(head, size) if first + p in odd) if odd else 0)
        tsize = 8
        while tsize < 2 * (count + 1):
            tsize *= 2
        table = self._table = array("I", bytes(4 * tsize))
        self._miss = None
        self._tbase = tbase
        self._tfill = count
        mask = tsize - 1
        entry = first - tbase + 1  # position p's entry is p + entry
        p = head
        while p < size:
            c = p >> CHUNK_BITS
            cols, data = self._cols[c], bytes(self._data[c])
            stop = min(size, (c + 1) << CHUNK_BITS)
            j = (p & _IN_CHUNK) * _STRIDE
            begin = (cols[j - _STRIDE] if j else 0) + 32  # where the key of position p starts
            for q in range(p, stop):
                if odd is None or first + q not in odd:
                    perturb = hash(data[begin:begin + (cols[j + 3] & _KEY_MASK)]) & _U64
                    i = perturb & mask
                    while table[i]:
                        perturb >>= 5
                        i = (i * 5 + perturb + 1) & mask
                    table[i] = q + entry
                begin = cols[j] + 32
                j += _STRIDE
            p = stop


class EventSeq(Sequence[SyncEvent]):
    """A :class:`StreamLog`'s retained events as a read-only sequence (rows built on read)."""

    __slots__ = ("_log",)

    def __init__(self, log: StreamLog) -> None:
        self._log = log

    def __len__(self) -> int:
        return len(self._log)

    @overload
    def __getitem__(self, i: int) -> SyncEvent: ...

    @overload
    def __getitem__(self, i: slice) -> list[SyncEvent]: ...

    def __getitem__(self, i: int | slice) -> SyncEvent | list[SyncEvent]:
        n = len(self._log)
        if isinstance(i, slice):
            event = self._log._event
            head = self._log._head
            return [event(head + k) for k in range(*i.indices(n))]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("event index out of range")
        return self._log._event(self._log._head + i)

    def __iter__(self) -> Iterator[SyncEvent]:
        log = self._log
        for p in range(log._head, log._size):
            yield log._event(p)

    def values(self, start: int = 0, stop: int | None = None) -> list[tuple[object, ...]]:
        """:meth:`StreamLog.values`: rows ``start..stop-1`` as column values, no row built."""
        return self._log.values(start, stop)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventSeq | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"EventSeq({list(self)!r})"


class ColumnRun:
    """Consecutive rows of one chunk, all stored in the columns, of one epoch (what
    :meth:`RetainedRows.runs` yields): rows ``offset .. offset + len - 1`` of the chunk, row ``i``
    of the run has seq ``first_seq + i``, its bytes in ``data`` run from ``ends[i - 1]`` (``start``
    for the first) to ``ends[i]``: the 32 bytes of its hash digest, its key (``key_lens[i]`` bytes
    of UTF-8), its payload (UTF-8).  The per-row columns are read from the chunk's arrays when
    asked for (an encoder that has the run's bytes already asks only for ``token``, ``offset``,
    ``len``, ``first_seq`` and ``epoch``).

    ``token`` is the chunk's two buffers.  A chunk's buffers are changed in place only by appends
    past their end (anything else -- a rollback, a write in front, a renumbering, the full chunk's
    slack dropped -- puts new buffers in its place, see :meth:`StreamLog.copy`), so while the same
    objects are alive, row ``r`` of them is the same stored row (the same bytes, the same seq
    ``first_seq - offset + r``; its producer's number means the same identity): what lets an
    encoder keep a chunk's encoded rows, whole or any part, and serve a later run of the same
    objects, epoch and stream from them (``adapters.bsatn.RunCache``, ADR-0024)."""

    __slots__ = ("_cols", "_j", "_jk", "_producers", "data", "epoch", "first_seq", "offset", "start", "token")

    def __init__(self, epoch: int, first_seq: int, data: bytearray, cols: array[int], i: int, k: int,
                 producers: list[str]) -> None:
        self.epoch, self.first_seq, self.data, self.offset = epoch, first_seq, data, i
        self._cols, self._j, self._jk, self._producers = cols, i * _STRIDE, k * _STRIDE, producers
        self.start = cols[self._j - _STRIDE] if i else 0
        self.token: tuple[object, object] | None = (cols, data)

    def __len__(self) -> int:
        return (self._jk - self._j) // _STRIDE

    def part(self, a: int, b: int) -> ColumnRun:
        """The run of this run's rows ``a .. b - 1`` (``0 <= a <= b <= len``): the same chunk,
        epoch and token."""
        if not 0 <= a <= b <= len(self):
            raise LocalProtocolError(f"rows {a}..{b} are not within a run of {len(self)}")
        i = self.offset
        return ColumnRun(self.epoch, self.first_seq + a, self.data, self._cols, i + a, i + b, self._producers)

    @property
    def ends(self) -> array[int]:
        return self._cols[self._j:self._jk:_STRIDE]

    @property
    def committed_at(self) -> array[int]:
        return self._cols[self._j + 1:self._jk:_STRIDE]

    @property
    def tx_offset(self) -> array[int]:
        return self._cols[self._j + 2:self._jk:_STRIDE]

    @property
    def key_lens(self) -> list[int]:
        return [m & _KEY_MASK for m in self._cols[self._j + 3:self._jk:_STRIDE]]

    @property
    def producers(self) -> list[str]:
        producers = self._producers
        return [producers[m >> _KEY_BITS] for m in self._cols[self._j + 3:self._jk:_STRIDE]]


class RetainedRows(Sequence[SyncEvent]):
    """Some retained events of one stream, oldest first, fixed when taken
    (:meth:`StreamLog.retained_rows`): a read-only sequence equal to the tuple or list of the same
    rows, whose rows are built on read, and whose :meth:`columns` give the stored fields without
    building a row -- for an encoder that writes them straight to bytes."""

    __slots__ = ("_len", "_log", "_segments")

    def __init__(self, log: StreamLog, segments: tuple[tuple[int, int], ...]) -> None:
        self._log = log
        self._segments = segments  # runs of positions [lo, hi) of the log's chunks
        self._len = sum(hi - lo for lo, hi in segments)

    @property
    def stream_id(self) -> str:
        return self._log.stream_id

    def __len__(self) -> int:
        return self._len

    def _positions(self) -> Iterator[int]:
        for lo, hi in self._segments:
            yield from range(lo, hi)

    @overload
    def __getitem__(self, i: int) -> SyncEvent: ...

    @overload
    def __getitem__(self, i: slice) -> list[SyncEvent]: ...

    def __getitem__(self, i: int | slice) -> SyncEvent | list[SyncEvent]:
        if isinstance(i, slice):
            ps = list(self._positions())
            return [self._log._event(ps[k]) for k in range(*i.indices(len(ps)))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("event index out of range")
        for lo, hi in self._segments:
            if i < hi - lo:
                return self._log._event(lo + i)
            i -= hi - lo
        raise AssertionError("unreachable")  # pragma: no cover

    def __iter__(self) -> Iterator[SyncEvent]:
        event = self._log._event
        for p in self._positions():
            yield event(p)

    def columns(self) -> Iterator[SyncEvent | tuple[int, int, bytes, bytes, bytes, str, int, int]]:
        """Per row, oldest first: a row kept whole (:class:`SyncEvent`), or its stored fields
        ``(epoch, seq, hash digest (32 bytes), key UTF-8, payload UTF-8, producer, committed_at,
        tx_offset)`` -- its stream is :attr:`stream_id`, its hash ``sha256:`` + the digest's hex."""
        log = self._log
        odd = log._odd or {}
        base = log.floor - log._head
        epochs, run_seqs = log._run_epochs, log._run_seqs
        producers = log._producers
        for lo, hi in self._segments:
            p = lo
            while p < hi:
                c = p >> CHUNK_BITS
                cols, data = log._cols[c], log._data[c]
                stop = min(hi, (c + 1) << CHUNK_BITS)
                j = (p & _IN_CHUNK) * _STRIDE
                start = cols[j - _STRIDE] if j else 0
                for q in range(p, stop):
                    seq = base + q
                    end = cols[j]
                    ev = odd.get(seq) if odd else None
                    if ev is not None:
                        yield ev
                    else:
                        meta = cols[j + 3]
                        kend = start + 32 + (meta & _KEY_MASK)
                        epoch = epochs[0] if len(epochs) == 1 else epochs[bisect_right(run_seqs, seq) - 1]
                        yield (epoch, seq, bytes(data[start:start + 32]), bytes(data[start + 32:kend]),
                               bytes(data[kend:end]), producers[meta >> _KEY_BITS], cols[j + 1], cols[j + 2])
                    start = end
                    j += _STRIDE
                p = stop

    def runs(self) -> Iterator[SyncEvent | ColumnRun]:
        """The rows, oldest first, a chunk's worth at a time: a row kept whole
        (:class:`SyncEvent`), or a :class:`ColumnRun` of consecutive rows of one chunk and one
        epoch, their fields as columns (read from the chunk's arrays by slicing, no row built)."""
        log = self._log
        odd = log._odd or {}
        base = log.floor - log._head
        epochs, run_seqs, producers = log._run_epochs, log._run_seqs, log._producers
        for lo, hi in self._segments:  # with odd rows in the log, segments are single rows
            p = lo
            while p < hi:
                c = p >> CHUNK_BITS
                stop = min(hi, (c + 1) << CHUNK_BITS)
                seq = base + p
                ev = odd.get(seq) if odd else None
                if ev is not None:
                    yield ev
                    p += 1
                    continue
                cols = log._cols[c]
                i, k = p & _IN_CHUNK, stop - (c << CHUNK_BITS)  # rows i..k-1 of the chunk
                yield ColumnRun(epochs[0] if len(epochs) == 1 else epochs[bisect_right(run_seqs, seq) - 1], seq,
                                log._data[c], cols, i, k, producers)
                p = stop

    def column_bytes(self) -> tuple[int, int, list[SyncEvent]]:
        """``(rows stored in the columns, their bytes in the chunks' data (digest, key, payload),
        the rows kept whole)``, counted from the columns' offsets without reading a row."""
        log = self._log
        odd = [] if not log._odd else [ev for ev in (log._odd.get(log.floor - log._head + p)
                                                     for p in self._positions()) if ev is not None]
        total = 0
        for lo, hi in self._segments:
            p = lo
            while p < hi:
                c = p >> CHUNK_BITS
                cols = log._cols[c]
                stop = min(hi, (c + 1) << CHUNK_BITS)
                j = (p & _IN_CHUNK) * _STRIDE
                total += cols[((stop - 1) & _IN_CHUNK) * _STRIDE] - (cols[j - _STRIDE] if j else 0)
                p = stop
        return self._len - len(odd), total, odd

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RetainedRows | EventSeq | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RetainedRows({list(self)!r})"


class KeyIndex(Mapping[str, int]):
    """A :class:`StreamLog`'s ``idempotency_key -> seq`` index, read from the index itself (so a
    consistency check that compares it with the events checks the index), in seq order."""

    __slots__ = ("_log",)

    def __init__(self, log: StreamLog) -> None:
        self._log = log

    def __getitem__(self, key: str) -> int:
        seq = self._log.seq_of(key)
        if seq is None:
            raise KeyError(key)
        return seq

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._log.seq_of(key) is not None

    def __iter__(self) -> Iterator[str]:
        """The keys in seq order (the order the events were appended)."""
        log = self._log
        first = log.floor - log._head
        entries: list[tuple[int, str | None]] = [(v - 1 + log._tbase, None) for v in log._table if v and v != _TOMB]
        if log._odd_keys is not None:
            entries += [(seq, key) for key, seq in log._odd_keys.items()]
        for seq, key in sorted(entries):
            yield log._key_bytes(seq - first).decode("utf-8") if key is None else key

    def __len__(self) -> int:
        return sum(1 for _ in self)
