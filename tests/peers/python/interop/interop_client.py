"""grpcio interop client: the test cases of gRPC's
doc/interop-test-descriptions.md that need no cloud credentials, written for
grpc-blocking's interop tests (the official Python interop client is not on
PyPI).

    python interop_client.py --stubs DIR --server_host H --server_port N
                             --test_case NAME[,NAME...]|all
                             [--use_tls [--use_test_ca] [--ca_file F]]
                             [--server_host_override H] [--case_timeout_secs S]

DIR holds the Python stubs generated from grpc-blocking's copy of the interop
protos (see interop_server.py). It prints one line per case, `PASS name` or
`FAIL name: why`, then `N passed, M failed`, and exits non-zero if a case
failed: the same output as grpc-blocking's `interop-client`. Each case runs
with a fresh channel and its own timeout (default 30 s).

The flags are the official interop clients', as grpc-blocking's
interop-client takes them (booleans bare or `=true|false`): `--use_tls`
makes the channels TLS (`grpc.ssl_channel_credentials`), trusting the CA
certificates of `--ca_file` (`--use_test_ca` says to trust the test CA,
which must then be given with `--ca_file`: none is built in) or, without it,
grpcio's default roots. `--server_host_override H` sets the :authority and,
with TLS, the name the server's certificate must carry
(`grpc.ssl_target_name_override`, which is also the SNI). The
cloud-credential flags are accepted and ignored with a note.

grpcio does not show a client the compressed flag of a response message, nor
let it send one request message of a compressed call uncompressed. For the
first, the client reaches the server through a relay (wiretap.py) that
records how every response message arrived. Over TLS the relay must see the
cleartext, so the two cases that read it (server_compressed_unary,
server_compressed_streaming) reach the server through a relay that speaks
TLS to the server itself (Python's `ssl`, with the same roots, server name
and ALPN `h2`), while grpcio speaks cleartext to the relay; every other case
connects grpcio's TLS channel straight to the server. For the second
(client_compressed_streaming), the client marks that message and a small
shim on grpcio's internal `cygrpc` send operation adds the no-compress write
flag for it (grpcio's own servers do the same with
`disable_next_message_compression`); the grpcio version is pinned.
"""

import argparse
import os
import queue
import ssl
import sys
import threading

from wiretap import Ledger, Relay

ALL_CASES = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
]

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_INITIAL_VALUE = "test_initial_metadata_value"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
ECHO_TRAILING_VALUE = b"\xab\xab\xab"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class CaseFailed(Exception):
    pass


def import_stubs(stubs_dir):
    """grpcio and the generated modules (package `grpc.testing`: grpcio's own
    `grpc` package extended with the stubs' `grpc` folder)."""
    import grpc

    grpc.__path__.append(os.path.join(os.path.abspath(stubs_dir), "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

    return grpc, empty_pb2, messages_pb2, test_pb2_grpc


class Uncompressed:
    """A request message to send without compression on a compressed call."""

    def __init__(self, message):
        self.message = message


class _UncompressedBytes(bytes):
    """Serialized bytes that carry the mark of an `Uncompressed` message."""


def install_no_compress_shim():
    """Makes grpcio send `_UncompressedBytes` with the no-compress write
    flag: wraps the `cygrpc` module that grpc._channel uses, changing only
    SendMessageOperation."""
    from grpc import _channel
    from grpc._cython import cygrpc

    class CygrpcShim:
        def __getattr__(self, name):
            return getattr(cygrpc, name)

        @staticmethod
        def SendMessageOperation(message, flags):  # noqa: N802 (cygrpc's name)
            if isinstance(message, _UncompressedBytes):
                return cygrpc.SendMessageOperation(
                    bytes(message), flags | cygrpc.WriteFlag.no_compress
                )
            return cygrpc.SendMessageOperation(message, flags)

    _channel.cygrpc = CygrpcShim()


def serialize_marking_uncompressed(message):
    if isinstance(message, Uncompressed):
        return _UncompressedBytes(message.message.SerializeToString())
    return message.SerializeToString()


class Pipe:
    """A request iterator fed one message at a time."""

    _END = object()

    def __init__(self):
        self._queue = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration()
        return item

    def add(self, message):
        self._queue.put(message)

    def close(self):
        self._queue.put(self._END)


class Cases:
    def __init__(self, grpc, empty_pb2, messages_pb2, test_pb2_grpc, ledger, channel):
        self.grpc = grpc
        self.empty_pb2 = empty_pb2
        self.pb = messages_pb2
        self.test_pb2_grpc = test_pb2_grpc
        self.ledger = ledger
        self.channel = channel
        self.stub = test_pb2_grpc.TestServiceStub(channel)

    # ---- helpers ----

    def zero_payload(self, size):
        return self.pb.Payload(type=self.pb.COMPRESSABLE, body=b"\0" * size)

    def large_request(self, **fields):
        return self.pb.SimpleRequest(
            response_type=self.pb.COMPRESSABLE,
            response_size=314159,
            payload=self.zero_payload(271828),
            **fields,
        )

    def duplex_request(self, response_size, request_size):
        return self.pb.StreamingOutputCallRequest(
            response_type=self.pb.COMPRESSABLE,
            response_parameters=[self.pb.ResponseParameters(size=response_size)],
            payload=self.zero_payload(request_size),
        )

    def bool_value(self, value):
        return self.pb.BoolValue(value=value)

    @staticmethod
    def expect_eq(what, got, want):
        if got != want:
            raise CaseFailed(f"{what}: expected {want!r}, got {got!r}")

    def check_payload(self, what, payload, size):
        self.expect_eq(f"{what}: payload type", payload.type, self.pb.COMPRESSABLE)
        self.expect_eq(f"{what}: payload size", len(payload.body), size)
        if payload.body.count(0) != len(payload.body):
            raise CaseFailed(f"{what}: the payload is not all zeros")

    @staticmethod
    def describe(error):
        return f"{error.code().name} {error.details()!r}"

    def ok(self, what, fn):
        try:
            return fn()
        except self.grpc.RpcError as e:
            raise CaseFailed(f"{what} failed: {self.describe(e)}") from None

    def failed_with(self, what, fn, code):
        try:
            fn()
        except self.grpc.RpcError as e:
            if e.code() != code:
                raise CaseFailed(f"{what}: expected {code.name}, got {self.describe(e)}") from None
            return e
        raise CaseFailed(f"{what} succeeded; expected {code.name}")

    def arrived_compressed(self, what, message):
        compressed = self.ledger.take(message.SerializeToString())
        if compressed is None:
            raise CaseFailed(f"{what}: the wire tap did not see this response arrive")
        return compressed

    # ---- the cases ----

    def empty_unary(self):
        response = self.ok("EmptyCall", lambda: self.stub.EmptyCall(self.empty_pb2.Empty()))
        if not isinstance(response, self.empty_pb2.Empty):
            raise CaseFailed(f"EmptyCall returned {type(response)}")

    def large_unary(self):
        response = self.ok("UnaryCall", lambda: self.stub.UnaryCall(self.large_request()))
        self.check_payload("the response", response.payload, 314159)

    def client_streaming(self):
        requests = [
            self.pb.StreamingInputCallRequest(payload=self.zero_payload(n))
            for n in (27182, 8, 1828, 45904)
        ]
        response = self.ok(
            "StreamingInputCall", lambda: self.stub.StreamingInputCall(iter(requests))
        )
        self.expect_eq("aggregated_payload_size", response.aggregated_payload_size, 74922)

    def server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        request = self.pb.StreamingOutputCallRequest(
            response_type=self.pb.COMPRESSABLE,
            response_parameters=[self.pb.ResponseParameters(size=n) for n in sizes],
        )
        responses = self.ok(
            "StreamingOutputCall", lambda: list(self.stub.StreamingOutputCall(request))
        )
        self.expect_eq("number of responses", len(responses), len(sizes))
        for i, (response, size) in enumerate(zip(responses, sizes)):
            self.check_payload(f"response {i + 1}", response.payload, size)

    def ping_pong(self):
        pipe = Pipe()
        responses = self.stub.FullDuplexCall(pipe)
        try:
            steps = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
            for i, (response_size, request_size) in enumerate(steps):
                pipe.add(self.duplex_request(response_size, request_size))
                try:
                    response = self.ok("FullDuplexCall", lambda: next(responses))
                except StopIteration:
                    raise CaseFailed(f"the call ended after {i} responses; expected 4") from None
                self.check_payload(f"response {i + 1}", response.payload, response_size)
            pipe.close()
            rest = self.ok("FullDuplexCall after the half-close", lambda: list(responses))
            if rest:
                raise CaseFailed("more than four responses")
        finally:
            pipe.close()

    def empty_stream(self):
        responses = self.ok("FullDuplexCall", lambda: list(self.stub.FullDuplexCall(iter([]))))
        if responses:
            raise CaseFailed(f"got {len(responses)} responses; expected none")

    def timeout_on_sleeping_server(self):
        pipe = Pipe()
        try:
            responses = self.stub.FullDuplexCall(pipe, timeout=0.001)
            pipe.add(self.pb.StreamingOutputCallRequest(payload=self.zero_payload(27182)))
            self.failed_with(
                "FullDuplexCall", lambda: next(responses), self.grpc.StatusCode.DEADLINE_EXCEEDED
            )
        finally:
            pipe.close()

    def cancel_after_begin(self):
        pipe = Pipe()
        try:
            call = self.stub.StreamingInputCall.future(pipe)
            call.cancel()
            self.expect_eq("the call's status code", call.code(), self.grpc.StatusCode.CANCELLED)
            if not call.cancelled():
                raise CaseFailed("the call does not report itself cancelled")
        finally:
            pipe.close()

    def cancel_after_first_response(self):
        pipe = Pipe()
        try:
            responses = self.stub.FullDuplexCall(pipe)
            pipe.add(self.duplex_request(31415, 27182))
            try:
                response = self.ok("FullDuplexCall", lambda: next(responses))
            except StopIteration:
                raise CaseFailed("the call ended without a response") from None
            self.check_payload("the response", response.payload, 31415)
            responses.cancel()
            self.failed_with(
                "the cancelled call", lambda: next(responses), self.grpc.StatusCode.CANCELLED
            )
        finally:
            pipe.close()

    def check_echo(self, what, initial, trailing):
        initial = [m.value for m in initial or () if m.key == ECHO_INITIAL]
        trailing = [m.value for m in trailing or () if m.key == ECHO_TRAILING]
        self.expect_eq(f"{what}: {ECHO_INITIAL} in the initial metadata", initial, [ECHO_INITIAL_VALUE])
        self.expect_eq(
            f"{what}: {ECHO_TRAILING} in the trailing metadata", trailing, [ECHO_TRAILING_VALUE]
        )

    def custom_metadata(self):
        metadata = ((ECHO_INITIAL, ECHO_INITIAL_VALUE), (ECHO_TRAILING, ECHO_TRAILING_VALUE))
        response, call = self.ok(
            "UnaryCall",
            lambda: self.stub.UnaryCall.with_call(self.large_request(), metadata=metadata),
        )
        self.check_payload("UnaryCall", response.payload, 314159)
        self.check_echo("UnaryCall", call.initial_metadata(), call.trailing_metadata())

        responses = self.stub.FullDuplexCall(
            iter([self.duplex_request(314159, 271828)]), metadata=metadata
        )
        initial = self.ok("FullDuplexCall headers", responses.initial_metadata)
        received = self.ok("FullDuplexCall", lambda: list(responses))
        self.expect_eq("FullDuplexCall responses", len(received), 1)
        self.check_payload("FullDuplexCall", received[0].payload, 314159)
        self.check_echo("FullDuplexCall", initial, responses.trailing_metadata())

    def echo_status(self, code, message, duplex):
        wanted = self.pb.EchoStatus(code=code, message=message)
        status_code = {c.value[0]: c for c in self.grpc.StatusCode}[code]
        error = self.failed_with(
            "UnaryCall",
            lambda: self.stub.UnaryCall(self.pb.SimpleRequest(response_status=wanted)),
            status_code,
        )
        self.expect_eq("UnaryCall status message", error.details(), message)
        if not duplex:
            return
        request = self.pb.StreamingOutputCallRequest(response_status=wanted)

        def duplex_call():
            received = list(self.stub.FullDuplexCall(iter([request])))
            if received:
                raise CaseFailed("FullDuplexCall sent a response; expected none")

        error = self.failed_with("FullDuplexCall", duplex_call, status_code)
        self.expect_eq("FullDuplexCall status message", error.details(), message)

    def status_code_and_message(self):
        self.echo_status(2, "test status message", True)

    def special_status_message(self):
        self.echo_status(2, SPECIAL_MESSAGE, False)

    def unimplemented_method(self):
        self.failed_with(
            "TestService/UnimplementedCall",
            lambda: self.stub.UnimplementedCall(self.empty_pb2.Empty()),
            self.grpc.StatusCode.UNIMPLEMENTED,
        )

    def unimplemented_service(self):
        stub = self.test_pb2_grpc.UnimplementedServiceStub(self.channel)
        self.failed_with(
            "UnimplementedService/UnimplementedCall",
            lambda: stub.UnimplementedCall(self.empty_pb2.Empty()),
            self.grpc.StatusCode.UNIMPLEMENTED,
        )

    def client_compressed_unary(self):
        gzip = self.grpc.Compression.Gzip
        expecting = lambda value: self.large_request(expect_compressed=self.bool_value(value))  # noqa: E731
        self.failed_with(
            "the probe (an uncompressed request with expect_compressed true)",
            lambda: self.stub.UnaryCall(expecting(True)),
            self.grpc.StatusCode.INVALID_ARGUMENT,
        )
        response = self.ok(
            "the compressed UnaryCall",
            lambda: self.stub.UnaryCall(expecting(True), compression=gzip),
        )
        self.check_payload("the compressed call's response", response.payload, 314159)
        response = self.ok(
            "the uncompressed UnaryCall", lambda: self.stub.UnaryCall(expecting(False))
        )
        self.check_payload("the uncompressed call's response", response.payload, 314159)

    def server_compressed_unary(self):
        for compressed in (True, False):
            what = f"UnaryCall with response_compressed {compressed}"
            request = self.large_request(response_compressed=self.bool_value(compressed))
            response = self.ok(what, lambda: self.stub.UnaryCall(request))
            self.expect_eq(
                f"{what}: the response's compressed flag",
                self.arrived_compressed(what, response),
                compressed,
            )
            self.check_payload(what, response.payload, 314159)

    def client_compressed_streaming(self):
        def request(size, expect):
            return self.pb.StreamingInputCallRequest(
                payload=self.zero_payload(size), expect_compressed=self.bool_value(expect)
            )

        self.failed_with(
            "the probe (an uncompressed message with expect_compressed true)",
            lambda: self.stub.StreamingInputCall(iter([request(27182, True)])),
            self.grpc.StatusCode.INVALID_ARGUMENT,
        )
        call = self.channel.stream_unary(
            "/grpc.testing.TestService/StreamingInputCall",
            request_serializer=serialize_marking_uncompressed,
            response_deserializer=self.pb.StreamingInputCallResponse.FromString,
        )
        requests = [request(27182, True), Uncompressed(request(45904, False))]
        response = self.ok(
            "StreamingInputCall",
            lambda: call(iter(requests), compression=self.grpc.Compression.Gzip),
        )
        self.expect_eq("aggregated_payload_size", response.aggregated_payload_size, 73086)

    def server_compressed_streaming(self):
        wanted = [(31415, True), (92653, False)]
        request = self.pb.StreamingOutputCallRequest(
            response_type=self.pb.COMPRESSABLE,
            response_parameters=[
                self.pb.ResponseParameters(size=size, compressed=self.bool_value(compressed))
                for size, compressed in wanted
            ],
        )
        responses = self.ok(
            "StreamingOutputCall", lambda: list(self.stub.StreamingOutputCall(request))
        )
        self.expect_eq("number of responses", len(responses), len(wanted))
        for i, (response, (size, compressed)) in enumerate(zip(responses, wanted)):
            what = f"response {i + 1} (compressed {compressed})"
            self.expect_eq(
                f"{what}: compressed flag", self.arrived_compressed(what, response), compressed
            )
            self.check_payload(what, response.payload, size)


# The cases that read the wire tap's record of the responses.
WIRETAP_CASES = ("server_compressed_unary", "server_compressed_streaming")


class Connector:
    """How each case reaches the server: its channel, and the wire tap the
    case's checks read (see the module's docstring)."""

    def __init__(self, grpc, host, port, override, tls_roots):
        """`tls_roots`: None for cleartext; with TLS, the PEM roots (bytes),
        or b"" for grpcio's default roots."""
        self.grpc = grpc
        self.upstream = (host, port)
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        name = override or host
        self.authority = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
        self.override = override
        self.server_name = name
        self.tls_roots = tls_roots

    def open(self, name, ledger):
        """(channel, relay or None) for case `name`."""
        options = [("grpc.default_authority", self.authority)]
        if self.tls_roots is None or name in WIRETAP_CASES:
            relay = Relay("127.0.0.1", 0, self.upstream, ledger, "responses",
                          connect_tls=self.relay_tls()).start()
            return self.grpc.insecure_channel(f"127.0.0.1:{relay.port}", options=options), relay
        credentials = self.grpc.ssl_channel_credentials(root_certificates=self.tls_roots or None)
        if self.override:
            options.append(("grpc.ssl_target_name_override", self.override))
        return self.grpc.secure_channel(self.target, credentials, options=options), None

    def relay_tls(self):
        """The relay's TLS to the server, as grpcio's channel would speak it."""
        if self.tls_roots is None:
            return None
        context = ssl.create_default_context(cadata=self.tls_roots.decode() or None)
        context.set_alpn_protocols(["h2"])
        return context, self.server_name


def run_case(stubs, connector, name, timeout):
    """Runs one case on its own thread, channel and wire tap; returns None or
    why it failed."""
    grpc = stubs[0]
    outcome = {}
    ledger = Ledger()
    channel, relay = connector.open(name, ledger)

    def body():
        try:
            getattr(Cases(*stubs, ledger, channel), name)()
            outcome["failure"] = None
        except CaseFailed as e:
            outcome["failure"] = str(e)
        except Exception as e:  # pylint: disable=broad-except
            outcome["failure"] = f"unexpected {type(e).__name__}: {e}"
        finally:
            channel.close()

    thread = threading.Thread(target=body, name=f"interop-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if relay is not None:
        relay.close()
    if thread.is_alive():
        return f"did not finish within {timeout} s (a hang?)"
    return outcome.get("failure", "the case ended without a result")


def parse_bool(text):
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_cases(text):
    cases = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        if name == "all":
            cases.extend(ALL_CASES)
        elif name in ALL_CASES:
            cases.append(name)
        else:
            raise SystemExit(f"interop_client: unknown test case {name!r}; known: all, {', '.join(ALL_CASES)}")
    if not cases:
        raise SystemExit("interop_client: no test case named")
    return cases


def tls_roots(args):
    """The roots of --use_tls (see `Connector`)."""
    if args.ca_file:
        with open(args.ca_file, "rb") as f:
            return f.read()
    if args.use_test_ca:
        raise SystemExit("interop_client: --use_test_ca needs --ca_file: no test CA is built in")
    return b""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="folder of the generated stubs")
    parser.add_argument("--server_host", default="localhost")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", default="all")
    parser.add_argument("--use_tls", type=parse_bool, nargs="?", const=True, default=False)
    parser.add_argument("--use_test_ca", type=parse_bool, nargs="?", const=True, default=False)
    parser.add_argument("--ca_file", help="PEM file of the CA certificates to trust (with --use_tls)")
    parser.add_argument("--server_host_override")
    parser.add_argument("--case_timeout_secs", type=float, default=30.0)
    ignored = (
        "default_service_account",
        "oauth_scope",
        "service_account_key_file",
        "service_config_json",
    )
    for name in ignored:
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    for name in ignored:
        if getattr(args, name) is not None:
            print(f"interop_client: note: --{name} is ignored", file=sys.stderr)
    cases = parse_cases(args.test_case)

    stubs = import_stubs(args.stubs)
    install_no_compress_shim()
    connector = Connector(
        stubs[0], args.server_host, args.server_port, args.server_host_override,
        tls_roots(args) if args.use_tls else None,
    )

    passed = failed = 0
    for name in cases:
        failure = run_case(stubs, connector, name, args.case_timeout_secs)
        if failure is None:
            passed += 1
            print(f"PASS {name}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {failure}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.stdout.flush()
    # Leave at once: threads of a hung case must not keep the process alive.
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
