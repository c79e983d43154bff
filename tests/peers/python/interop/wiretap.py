"""A TCP relay that watches the gRPC messages going by, for the grpcio interop
peers.

grpcio shows neither side whether a message arrived compressed: a servicer
cannot tell a compressed request from an uncompressed one, and a client
cannot see the compressed flag of a response. The interop cases about
compression assert exactly that flag, so the grpcio interop server and client
put this relay between themselves and their peer:

* the relay forwards bytes unchanged in both directions, one thread per
  connection; over TLS it is a TLS end itself and forwards the cleartext
  (see `Relay`);
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
import selectors
import socket
import ssl
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
    sends (`watch="responses"`).

    Over TLS the relay must see the cleartext, so it is a TLS end itself:
    with `accept_tls` (a server-side `ssl.SSLContext`) it terminates the TLS
    of the clients that connect to it; with `connect_tls` (a client-side
    `ssl.SSLContext` and the server name to expect) it speaks TLS to
    `upstream`. Either way ALPN must settle on `h2`. The relay's TLS is
    Python's `ssl` module (OpenSSL), not grpcio's."""

    def __init__(self, host, port, upstream, ledger, watch, accept_tls=None, connect_tls=None):
        if watch not in ("requests", "responses"):
            raise ValueError(watch)
        self._upstream = upstream
        self._ledger = ledger
        self._watch = watch
        self._accept_tls = accept_tls
        self._connect_tls = connect_tls
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
            threading.Thread(
                target=self._relay, args=(downstream,), name="relay-connection", daemon=True
            ).start()

    def _relay(self, downstream):
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            downstream.close()
            return
        client = _End(downstream, self._accept_tls and _Tls(self._accept_tls, True))
        server = _End(
            upstream, self._connect_tls and _Tls(self._connect_tls[0], False, self._connect_tls[1])
        )
        to_server = FrameWatcher(self._ledger, True) if self._watch == "requests" else None
        to_client = FrameWatcher(self._ledger, False) if self._watch == "responses" else None
        try:
            _run(client, server, to_server, to_client)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass  # a side went away without closing cleanly: common, and harmless here
        except (OSError, ssl.SSLError, ValueError) as e:
            print(f"wiretap: a relayed connection ended: {e!r}", file=sys.stderr)
        finally:
            client.sock.close()
            server.sock.close()

    def close(self):
        self._listener.close()


class _Tls:
    """One side's TLS, sans-IO (`ssl.MemoryBIO`): the relay's one thread per
    connection moves the bytes, so OpenSSL never sees two threads at once."""

    def __init__(self, context, server_side, server_hostname=None):
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side, server_hostname)
        self._handshaken = False
        self._waiting = bytearray()  # cleartext to send once the handshake is done
        self._closing = False
        self.closed = False  # the peer sent its close_notify, or its EOF
        self._step()

    def _step(self):
        """Moves the handshake on; once done, encrypts what waits."""
        if not self._handshaken:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return
            alpn = self._obj.selected_alpn_protocol()
            if alpn != "h2":
                raise ValueError(f"TLS settled on ALPN {alpn!r}, not 'h2'")
            self._handshaken = True
        view = memoryview(bytes(self._waiting))
        self._waiting.clear()
        while view:
            view = view[self._obj.write(view) :]

    def received(self, data):
        """Takes bytes from the socket (b"" at its EOF); returns the cleartext
        they complete."""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        self._step()
        plain = bytearray()
        while self._handshaken and not self.closed:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                self.closed = True
            plain += chunk
        return bytes(plain)

    def send(self, plain):
        self._waiting += plain
        self._step()

    def close(self):
        """Queues a close_notify (once)."""
        if self._closing:
            return
        self._closing = True
        try:
            self._obj.unwrap()
        except ssl.SSLError:
            pass  # it went out; the peer's answer is not awaited

    def outgoing(self):
        """The TLS records to put on the socket."""
        return self._out.read()


class _End:
    """One socket of a relayed connection (non-blocking), with its TLS if
    it has one, and the bytes waiting to go out on it."""

    # Stop reading the other end while this much waits to go out here.
    HIGH_WATER = 1 << 20

    def __init__(self, sock, tls):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.tls = tls or None
        self.outbox = bytearray()
        self.eof = False  # nothing more comes from it
        self.shut = False  # closed for writing: nothing more goes to it
        self._collect()

    def _collect(self):
        if self.tls is not None:
            self.outbox += self.tls.outgoing()

    def read(self):
        """The cleartext that arrived (b"" at the end), or None if the
        socket had nothing after all."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        if self.tls is None:
            self.eof = not data
            return data
        plain = self.tls.received(data)
        self._collect()
        self.eof = self.tls.closed
        return plain

    def send(self, plain):
        if self.tls is None:
            self.outbox += plain
        else:
            self.tls.send(plain)
            self._collect()

    def flush(self):
        while self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except (BlockingIOError, InterruptedError):
                return
            del self.outbox[:sent]

    def finish(self):
        """The other end is done: close this one for writing once what waits
        has gone out (with a close_notify first over TLS)."""
        if self.shut:
            return
        if self.tls is not None:
            self.tls.close()
            self._collect()
        self.flush()
        if not self.outbox:
            self.shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _run(client, server, to_server, to_client):
    """Moves the bytes of one connection both ways, on the calling thread,
    until both sides are done. Each direction's cleartext is fed to its
    watcher before it is forwarded."""
    other_of = {client: server, server: client}
    watchers = {client: to_server, server: to_client}
    selector = selectors.DefaultSelector()
    try:
        while not (client.shut and server.shut):
            for end in (client, server):
                if other_of[end].eof:
                    end.finish()
            for end in (client, server):
                events = 0
                if not end.eof and len(other_of[end].outbox) < _End.HIGH_WATER:
                    events |= selectors.EVENT_READ
                if end.outbox:
                    events |= selectors.EVENT_WRITE
                if events:
                    selector.register(end.sock, events, end)
            if not selector.get_map():
                return
            ready = selector.select()
            for sock in list(selector.get_map()):
                selector.unregister(sock)
            for key, events in ready:
                end = key.data
                other = other_of[end]
                if events & selectors.EVENT_WRITE:
                    end.flush()
                if not events & selectors.EVENT_READ:
                    continue
                plain = end.read()
                if plain and watchers[end] is not None:
                    try:
                        watchers[end].feed(plain)
                    except Exception as e:  # pylint: disable=broad-except
                        # Keep relaying; the messages after this go
                        # unrecorded and `Ledger.take` says so.
                        print(f"wiretap: stopped watching a connection: {e!r}", file=sys.stderr)
                        watchers[end] = None
                if plain:
                    other.send(plain)
                    other.flush()
                end.flush()  # handshake records, alerts
    finally:
        selector.close()
