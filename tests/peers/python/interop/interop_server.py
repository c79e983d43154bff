"""grpcio interop server: `grpc.testing.TestService` as gRPC's
doc/interop-test-descriptions.md describes it (server section), written for
grpc-blocking's interop tests.

    python interop_server.py --stubs DIR [--port N] [--host H] [--forever]
                             [--use_tls --tls_cert_file F --tls_key_file F]

DIR holds the Python stubs generated from grpc-blocking's copy of the interop
protos (examples/proto/grpc/testing/*.proto, generated as `grpc/testing/*_pb2.py`
by tests/tests/interop.rs). Once serving, the server prints one JSON line,
{"port": N, "wiretap_port": W}, with the port it listens on (pick one with
--port 0, the default) and the port of its wire tap (below; the same port
without TLS). It serves until its standard input closes, or until killed
with --forever.

The TLS flags are those of grpc-blocking's interop-server (booleans bare or
`=true|false`): with `--use_tls`, grpcio serves TLS itself on the port
(`grpc.ssl_server_credentials` with the PEM certificate chain and key).

Server features: EmptyCall, UnaryCall (response_size, response_type,
response_compressed, expect_compressed, response_status), CacheableUnaryCall,
StreamingInputCall (expect_compressed per message), StreamingOutputCall,
FullDuplexCall and HalfDuplexCall (response_parameters with size, interval_us
and compressed; response_status), the metadata echo
(`x-grpc-test-echo-initial` into the initial metadata,
`x-grpc-test-echo-trailing-bin` into the trailing metadata).
`UnimplementedCall` is left unimplemented (grpcio answers UNIMPLEMENTED) and
`grpc.testing.UnimplementedService` is not served.

grpcio does not tell a servicer whether a request message arrived
compressed, so clients reach the grpcio server through a relay (wiretap.py)
that records the compressed flag of every request message; the
expect_compressed checks read it from there. Without TLS the relay is the
port. With TLS the relay must see the cleartext, so it cannot stand in front
of grpcio's own TLS: it listens on the wire-tap port, terminates TLS there
with the same certificate (Python's `ssl`, not grpcio's TLS) and forwards
the cleartext to a loopback port grpcio serves without TLS. Only the cases
that send `expect_compressed` (client_compressed_unary,
client_compressed_streaming) need it; on the port, the checks fail with
INTERNAL ("the wire tap did not see this request message arrive").
"""

import argparse
import json
import os
import ssl
import sys
import time
from concurrent import futures

from wiretap import Ledger, Relay

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def import_stubs(stubs_dir):
    """grpcio and the generated modules. They live in the package
    `grpc.testing`, which is grpcio's own `grpc` package extended with the
    stubs' `grpc` folder."""
    import grpc

    grpc.__path__.append(os.path.join(os.path.abspath(stubs_dir), "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

    return grpc, empty_pb2, messages_pb2, test_pb2_grpc


def make_servicer(grpc, empty_pb2, messages_pb2, test_pb2_grpc, ledger):
    codes = {code.value[0]: code for code in grpc.StatusCode}

    def zero_payload(size):
        return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)

    class Echo:
        """The metadata echo of one call."""

        def __init__(self, context):
            self.initial = None
            for m in context.invocation_metadata():
                if m.key == ECHO_INITIAL and self.initial is None:
                    self.initial = m.value
                elif m.key == ECHO_TRAILING:
                    context.set_trailing_metadata(((ECHO_TRAILING, m.value),))

        def send_headers(self, context):
            if self.initial is not None:
                context.send_initial_metadata(((ECHO_INITIAL, self.initial),))
                self.initial = None

    def abort_with_echoed_status(context, echo, status):
        if status is not None and status.code != 0:
            echo.send_headers(context)
            context.abort(codes.get(status.code, grpc.StatusCode.UNKNOWN), status.message)

    def check_compression(context, request):
        if not request.HasField("expect_compressed"):
            return
        compressed = ledger.take(request.SerializeToString())
        if compressed is None:
            context.abort(
                grpc.StatusCode.INTERNAL,
                "the wire tap did not see this request message arrive",
            )
        expected = request.expect_compressed.value
        if expected and not compressed:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected a compressed request message, got an uncompressed one",
            )
        if not expected and compressed:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected an uncompressed request message, got a compressed one",
            )

    def check_payload_type(context, response_type):
        if response_type != messages_pb2.COMPRESSABLE:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"unsupported response_type {response_type}"
            )

    def check_size(context, size):
        if size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"negative response size {size}")
        return size

    def choose_compression(context, parameters):
        if any(p.HasField("compressed") and p.compressed.value for p in parameters):
            context.set_compression(grpc.Compression.Gzip)

    def sized_responses(context, parameters):
        """Yields one response per parameter, after its interval, with the
        compressed flag it asks for."""
        for p in parameters:
            size = check_size(context, p.size)
            if p.interval_us > 0:
                time.sleep(p.interval_us / 1e6)
            if p.HasField("compressed") and not p.compressed.value:
                context.disable_next_message_compression()
            yield messages_pb2.StreamingOutputCallResponse(payload=zero_payload(size))

    def answer(context, echo, request, state):
        """The responses to one request of the duplex methods."""
        abort_with_echoed_status(context, echo, request.response_status if request.HasField("response_status") else None)
        check_payload_type(context, request.response_type)
        if request.response_parameters and not state["headers_sent"]:
            # Only possible before the headers go out.
            choose_compression(context, request.response_parameters)
            echo.send_headers(context)
            state["headers_sent"] = True
        yield from sized_responses(context, request.response_parameters)

    class TestService(test_pb2_grpc.TestServiceServicer):
        def EmptyCall(self, request, context):
            Echo(context).send_headers(context)
            return empty_pb2.Empty()

        def UnaryCall(self, request, context):
            echo = Echo(context)
            check_compression(context, request)
            check_payload_type(context, request.response_type)
            size = check_size(context, request.response_size)
            if request.HasField("response_compressed"):
                context.set_compression(
                    grpc.Compression.Gzip
                    if request.response_compressed.value
                    else grpc.Compression.NoCompression
                )
            echo.send_headers(context)
            if request.HasField("response_status"):
                abort_with_echoed_status(context, echo, request.response_status)
            return messages_pb2.SimpleResponse(payload=zero_payload(size))

        def CacheableUnaryCall(self, request, context):
            echo = Echo(context)
            headers = [("cache-control", "max-age=60, public")]
            if echo.initial is not None:
                headers.append((ECHO_INITIAL, echo.initial))
            context.send_initial_metadata(tuple(headers))
            if request.HasField("response_status"):
                abort_with_echoed_status(context, echo, request.response_status)
            body = str(time.time_ns()).encode()
            return messages_pb2.SimpleResponse(
                payload=messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=body)
            )

        def StreamingOutputCall(self, request, context):
            echo = Echo(context)
            if request.HasField("response_status"):
                abort_with_echoed_status(context, echo, request.response_status)
            check_payload_type(context, request.response_type)
            choose_compression(context, request.response_parameters)
            echo.send_headers(context)
            yield from sized_responses(context, request.response_parameters)

        def StreamingInputCall(self, request_iterator, context):
            echo = Echo(context)
            total = 0
            for request in request_iterator:
                check_compression(context, request)
                total += len(request.payload.body)
            echo.send_headers(context)
            return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

        def FullDuplexCall(self, request_iterator, context):
            echo = Echo(context)
            state = {"headers_sent": False}
            for request in request_iterator:
                yield from answer(context, echo, request, state)
            echo.send_headers(context)

        def HalfDuplexCall(self, request_iterator, context):
            echo = Echo(context)
            state = {"headers_sent": False}
            requests = list(request_iterator)
            for request in requests:
                yield from answer(context, echo, request, state)
            echo.send_headers(context)

        # UnimplementedCall: the generated base class answers UNIMPLEMENTED.

    return TestService()


def parse_bool(text):
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def tls_files(args):
    """The PEM certificate chain and key of --use_tls, as bytes."""
    if not (args.tls_cert_file and args.tls_key_file):
        raise SystemExit("interop_server: --use_tls needs --tls_cert_file and --tls_key_file")
    with open(args.tls_cert_file, "rb") as cert, open(args.tls_key_file, "rb") as key:
        return cert.read(), key.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="folder of the generated stubs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--use_tls", type=parse_bool, nargs="?", const=True, default=False)
    parser.add_argument("--tls_cert_file", help="PEM certificate chain (with --use_tls)")
    parser.add_argument("--tls_key_file", help="PEM private key (with --use_tls)")
    parser.add_argument("--forever", action="store_true", help="ignore stdin; serve until killed")
    args = parser.parse_args()
    cert_key = tls_files(args) if args.use_tls else None

    grpc, empty_pb2, messages_pb2, test_pb2_grpc = import_stubs(args.stubs)
    ledger = Ledger()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    test_pb2_grpc.add_TestServiceServicer_to_server(
        make_servicer(grpc, empty_pb2, messages_pb2, test_pb2_grpc, ledger), server
    )
    inner_port = server.add_insecure_port("127.0.0.1:0")
    if inner_port == 0:
        print("interop_server: could not bind a loopback port", file=sys.stderr, flush=True)
        sys.exit(1)
    if cert_key:
        cert, key = cert_key
        port = server.add_secure_port(
            f"{args.host}:{args.port}", grpc.ssl_server_credentials([(key, cert)])
        )
        if port == 0:
            print(f"interop_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
            sys.exit(1)
        relay_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        relay_tls.load_cert_chain(args.tls_cert_file, args.tls_key_file)
        relay_tls.set_alpn_protocols(["h2"])
        relay_at = (args.host, 0)
    else:
        port, relay_tls, relay_at = None, None, (args.host, args.port)
    server.start()
    try:
        relay = Relay(
            *relay_at, ("127.0.0.1", inner_port), ledger, "requests", accept_tls=relay_tls
        ).start()
    except OSError as e:
        print(f"interop_server: cannot listen on {relay_at}: {e}", file=sys.stderr)
        sys.exit(1)
    if port is None:
        port = relay.port
    print(
        json.dumps({"port": port, "wiretap_port": relay.port, "grpcio": grpc.__version__}),
        flush=True,
    )

    if args.forever:
        server.wait_for_termination()
    else:
        for _ in sys.stdin:
            pass
    relay.close()
    server.stop(grace=None)
    sys.stdout.flush()
    # Leave at once: a normal exit would join worker threads that may wait
    # on calls of a client that is gone.
    os._exit(0)


if __name__ == "__main__":
    main()
