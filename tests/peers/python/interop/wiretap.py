"""A TCP relay that watches the gRPC messages going by, for the grpcio interop
peers.

grpcio shows neither side whether a message arrived compressed: a servicer
cannot tell a compressed request from an uncompressed one, and a client
cannot see the compressed flag of a response. The interop cases about
compression assert exactly that flag, so the grpcio interop server and client
put this relay between themselves and their peer:

* the relay forwards bytes unchanged in both directions;
* in the direction it watches, it reads the HTTP/2 frames (cleartext h2c,
  prior knowledge), takes the DATA of each stream apart into gRPC messages
  (a 1-byte compressed flag, a 4-byte length, the bytes) and records, for
  each message, its decompressed bytes and whether it was compressed, in a
  `Ledger`; it records a chunk before forwarding it, so the record exists
  before grpcio can hand the message to the application;
* the application serializes the message it got again and asks the ledger
  how the message with those bytes arrived (`Ledger.take`), right after
  getting it.

Of several messages with the same bytes, the most recent arrival answers (and
is forgotten): the interop cases run one after the other, and earlier
messages with the same bytes may have gone unasked (large_unary's response
is also custom_metadata's and server_compressed_unary's). Standard library
only.
"""

import collections
import hashlib
import socket
import sys
import threading
import zlib

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_DATA = 0x0
FRAME_RST_STREAM = 0x3
FLAG_END_STREAM = 0x1
FLAG_PADDED = 0x8
# Keep at most this many distinct message contents (oldest dropped first).
LEDGER_LIMIT = 4096


class Ledger:
    """How each message seen arrived (compressed or not), by its bytes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = collections.OrderedDict()

    @staticmethod
    def _key(plain):
        return hashlib.sha256(plain).digest()

    def record(self, plain, compressed):
        key = self._key(plain)
        with self._lock:
            flags = self._seen.pop(key, None) or collections.deque()
            flags.append(bool(compressed))
            self._seen[key] = flags
            while len(self._seen) > LEDGER_LIMIT:
                self._seen.popitem(last=False)

    def take(self, plain):
        """Whether the most recent message not yet taken with exactly these
        bytes arrived compressed; None if no such message was seen."""
        key = self._key(plain)
        with self._lock:
            flags = self._seen.get(key)
            if not flags:
                return None
            compressed = flags.pop()
            if not flags:
                del self._seen[key]
            return compressed


def _decompress(body):
    # gzip or zlib ("deflate" in gRPC) framing, detected from the header.
    try:
        return zlib.decompress(body, 32 + zlib.MAX_WBITS)
    except zlib.error:
        try:
            return zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error:
            return None


class FrameWatcher:
    """Parses one direction of an HTTP/2 connection and records the gRPC
    messages of its DATA frames in a ledger."""

    def __init__(self, ledger, client_side):
        self._ledger = ledger
        self._buf = bytearray()
        self._preface_left = len(PREFACE) if client_side else 0
        self._streams = {}

    def feed(self, data):
        self._buf += data
        if self._preface_left:
            skip = min(self._preface_left, len(self._buf))
            del self._buf[:skip]
            self._preface_left -= skip
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[0:3], "big")
            if len(self._buf) < 9 + length:
                return
            kind = self._buf[3]
            flags = self._buf[4]
            stream = int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self._buf[9 : 9 + length])
            del self._buf[: 9 + length]
            if kind == FRAME_DATA:
                if flags & FLAG_PADDED and payload:
                    pad = payload[0]
                    payload = payload[1 : len(payload) - pad]
                self._data(stream, payload)
                if flags & FLAG_END_STREAM:
                    self._streams.pop(stream, None)
            elif kind == FRAME_RST_STREAM:
                self._streams.pop(stream, None)

    def _data(self, stream, payload):
        buf = self._streams.setdefault(stream, bytearray())
        buf += payload
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + length:
                return
            compressed = bool(buf[0] & 1)
            body = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            plain = _decompress(body) if compressed else body
            if plain is not None:
                self._ledger.record(plain, compressed)


class Relay:
    """Listens on (host, port) and relays each connection to `upstream`,
    watching what the client sends (`watch="requests"`) or what the server
    sends (`watch="responses"`)."""

    def __init__(self, host, port, upstream, ledger, watch):
        if watch not in ("requests", "responses"):
            raise ValueError(watch)
        self._upstream = upstream
        self._ledger = ledger
        self._watch = watch
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.port = self._listener.getsockname()[1]

    def start(self):
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                downstream.close()
                continue
            for s in (downstream, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            to_server = FrameWatcher(self._ledger, True) if self._watch == "requests" else None
            to_client = FrameWatcher(self._ledger, False) if self._watch == "responses" else None
            pair = _Pair(downstream, upstream)
            for src, dst, watcher in ((downstream, upstream, to_server), (upstream, downstream, to_client)):
                threading.Thread(
                    target=_pump, args=(pair, src, dst, watcher), name="relay-pump", daemon=True
                ).start()

    def close(self):
        self._listener.close()


class _Pair:
    """The two sockets of one relayed connection: closed when both
    directions are done."""

    def __init__(self, a, b):
        self._sockets = (a, b)
        self._lock = threading.Lock()
        self._open_directions = 2

    def direction_done(self):
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            for s in self._sockets:
                s.close()

    def abort(self):
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _pump(pair, src, dst, watcher):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if watcher is not None:
                try:
                    watcher.feed(data)
                except Exception as e:  # pylint: disable=broad-except
                    # Keep relaying; the messages after this go unrecorded
                    # and `Ledger.take` says so.
                    print(f"wiretap: stopped watching a connection: {e!r}", file=sys.stderr)
                    watcher = None
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pair.abort()
    finally:
        pair.direction_done()
