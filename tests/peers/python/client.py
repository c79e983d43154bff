"""grpcio client for the equivalence tests.

Two modes:

    python client.py --stubs DIR serve
        The test harness's driver: reads commands as JSON lines on stdin and
        answers each with one JSON line on stdout. Commands run concurrently
        (one thread each), so answers may come out of order: match them by
        "id". Ends when stdin closes.

    python client.py --stubs DIR example --target TARGET
                     [--use_tls [--ca_file F] [--cert_file F --key_file F]
                      [--server_host_override H]]
        Calls the four methods of nameko-grpc's example service, `nameko.example`, and
        prints what came back, one JSON line per call:
        {"method": "unary_unary", "replies": [{"message": "AA", "seqno": 0}]},
        or {"method": ..., "code": 14, "details": "..."} for a call that
        failed. TARGET is any grpcio target: 127.0.0.1:50051,
        unix:/path/to/socket, unix-abstract:name. With --use_tls the channel
        speaks TLS (`grpc.ssl_channel_credentials`): it trusts the CA
        certificates of --ca_file (grpcio's default roots without it),
        presents the client certificate and key of --cert_file and
        --key_file if given (mutual TLS), and expects the server's
        certificate to be valid for --server_host_override if given
        (`grpc.ssl_target_name_override`). The flags are those of
        grpc-blocking's example-client.

Commands of `serve` (every field but "id" and "op" optional unless noted):

    {"id": 1, "op": "version"}
        -> {"id": 1, "grpcio": "1.85.1", "protobuf": "..."}
    {"id": 2, "op": "call",
     "target": "127.0.0.1:PORT",            required
     "path": "/equivalence.Equivalence/unary_unary",   required
     "kind": "unary_unary" | "unary_stream" | "stream_unary" | "stream_stream",
             required when the path is not a method of the generated stubs
     "requests": ["<base64 of a serialized request>", ...],  exactly one for
             unary requests
     "metadata": [{"name": "x-a", "text": "v"}, {"name": "x-b-bin", "bin": "<base64>"}],
     "timeout": 30.0,                         seconds
     "pingpong": false,                       stream_stream: send request i+1
                                              only once reply i has arrived
     "raw": false,                            send the request bytes as given,
                                              even to a method of the stubs
     "response_type": "equivalence.ReplyAsText",  parse replies as this type
                                              (grpcio's response_deserializer)
     "compression": "gzip",                   the call's compression
                                              ("identity", "gzip", "deflate")
     "fresh_channel": false,                  make the call on a channel of
                                              its own, closed after the call
     "channel_compression": "deflate",        that channel's default
                                              compression (implies
                                              "fresh_channel")
     "cancel_after": 2}                       cancel the call once this many
                                              replies arrived (0: once its
                                              response headers arrived),
                                              leaving the request stream
                                              open until then
        -> {"id": 2, "code": 0, "details": "...",
            "headers": [metadata as above], "trailers": [...],
            "responses": ["<base64 of a serialized reply>", ...],
            "rich_status": "<base64 of the google.rpc.Status that
                            grpc_status.rpc_status.from_call returns>" | null}

A call the library refuses before it reaches the wire answers
{"id": N, "error": "..."}; so does a malformed command.

Calls to the methods of the generated stubs (`equivalence.Equivalence`,
`nameko.example`) go through the stubs: the request is parsed into its message
type and the stub serializes it again. Other paths (the unknown-method tests),
calls whose "kind" is not the method's (the cardinality tests) and calls with
"raw" or "response_type" (the parse-error tests) go through the channel's raw
multi-callables: bytes in, and bytes (or "response_type") out.
"""

import argparse
import base64
import json
import os
import queue
import sys
import threading

PINGPONG_WAIT_S = 120.0
# The longest a request stream stays open waiting for its call's cancel.
CANCEL_WAIT_S = 120.0


def import_stubs(stubs_dir):
    sys.path.insert(0, os.path.abspath(stubs_dir))
    import grpc
    import equivalence_pb2
    import equivalence_pb2_grpc

    modules = [(equivalence_pb2, equivalence_pb2_grpc)]
    try:
        import example_pb2
        import example_pb2_grpc

        modules.append((example_pb2, example_pb2_grpc))
    except ImportError:
        pass
    return grpc, modules


def kind_of(method):
    if method.client_streaming:
        return "stream_stream" if method.server_streaming else "stream_unary"
    return "unary_stream" if method.server_streaming else "unary_unary"


class StubMethod:
    def __init__(self, module_grpc, service, method):
        from google.protobuf import message_factory

        self.service = service.name
        self.name = method.name
        self.kind = kind_of(method)
        self.stub_class = getattr(module_grpc, service.name + "Stub")
        self.request_class = message_factory.GetMessageClass(method.input_type)


def metadata_from_json(items):
    out = []
    for item in items or []:
        if "bin" in item:
            out.append((item["name"], base64.b64decode(item["bin"])))
        else:
            out.append((item["name"], item["text"]))
    return out


def metadata_to_json(md):
    out = []
    for key, value in md or ():
        if isinstance(value, bytes):
            out.append({"name": key, "bin": base64.b64encode(value).decode()})
        else:
            out.append({"name": key, "text": value})
    return out


class Driver:
    def __init__(self, grpc, modules):
        self.grpc = grpc
        self.methods = {}
        for pb2, pb2_grpc in modules:
            for service in pb2.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    self.methods[path] = StubMethod(pb2_grpc, service, method)
        self.lock = threading.Lock()
        self.channels = {}
        self.stubs = {}
        self.out_lock = threading.Lock()

    def channel(self, target):
        with self.lock:
            channel = self.channels.get(target)
            if channel is None:
                # No proxy: the tests talk to loopback only, whatever the
                # environment's http_proxy says.
                channel = self.grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
                self.channels[target] = channel
            return channel

    def fresh_channel(self, target, compression):
        """A channel of its own for one call (the caller closes it)."""
        return self.grpc.insecure_channel(
            target, options=[("grpc.enable_http_proxy", 0)],
            compression=self.compression(compression),
        )

    def compression(self, name):
        if name is None:
            return None
        return {
            "identity": self.grpc.Compression.NoCompression,
            "gzip": self.grpc.Compression.Gzip,
            "deflate": self.grpc.Compression.Deflate,
        }[name]

    def multi_callable(self, target, path, kind, raw=False, response_type=None, channel=None):
        """(multi-callable, kind, request parser) for a path, on `channel` if
        given, else on the shared channel to `target`."""
        method = self.methods.get(path)
        if method is not None and kind in (None, method.kind) and not raw and not response_type:
            if channel is not None:
                stub = method.stub_class(channel)
                return getattr(stub, method.name), method.kind, method.request_class.FromString
            key = (target, method.service)
            with self.lock:
                stub = self.stubs.get(key)
            if stub is None:
                stub = method.stub_class(self.channel(target))
                with self.lock:
                    self.stubs[key] = stub
            return getattr(stub, method.name), method.kind, method.request_class.FromString
        if kind is None:
            raise ValueError(f"{path} is not a method of the stubs: say its kind")
        channel = channel or self.channel(target)
        factory = getattr(channel, kind)
        deserializer = None
        if response_type:
            from google.protobuf import descriptor_pool, message_factory

            descriptor = descriptor_pool.Default().FindMessageTypeByName(response_type)
            deserializer = message_factory.GetMessageClass(descriptor).FromString
        return factory(path, response_deserializer=deserializer), kind, lambda data: data

    def write(self, obj):
        line = json.dumps(obj)
        with self.out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def handle(self, command):
        cid = command.get("id")
        try:
            op = command.get("op")
            if op == "version":
                import google.protobuf

                answer = {"grpcio": self.grpc.__version__, "protobuf": google.protobuf.__version__}
            elif op == "call":
                answer = self.call(command)
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # report, never die: other commands are in flight
            answer = {"error": f"{type(e).__name__}: {e}"}
        answer["id"] = cid
        self.write(answer)

    def call(self, command):
        channel = None
        if command.get("fresh_channel") or command.get("channel_compression"):
            channel = self.fresh_channel(command["target"], command.get("channel_compression"))
        try:
            return self.call_on(command, channel)
        finally:
            if channel is not None:
                channel.close()

    def call_on(self, command, channel):
        grpc = self.grpc
        mc, kind, parse = self.multi_callable(
            command["target"], command["path"], command.get("kind"), command.get("raw", False),
            command.get("response_type"), channel,
        )
        raw_requests = [base64.b64decode(r) for r in command.get("requests", [])]
        requests = [parse(r) for r in raw_requests]
        metadata = metadata_from_json(command.get("metadata"))
        timeout = command.get("timeout")
        compression = self.compression(command.get("compression"))
        if command.get("compression") == "identity":
            # grpcio asks for a call's compression with this metadata entry,
            # but skips it for NoCompression (an IntEnum of value 0, hence
            # falsy, in grpc/_compression.py `augment_metadata`): a call
            # could not turn off its channel's default compression. Sending
            # the entry grpcio would send does it.
            metadata = list(metadata) + [("grpc-internal-encoding-request", "identity")]
        responses = []
        if kind in ("unary_unary", "unary_stream") and len(requests) != 1:
            raise ValueError(f"{kind} takes exactly one request, got {len(requests)}")

        if command.get("cancel_after") is not None:
            if kind == "unary_unary":
                # grpcio's unary-unary call learns of the response headers
                # only with the whole response (one batch of operations), so
                # it cannot wait for them: make the same call (one request,
                # then the end of the stream: the same bytes on the wire)
                # through a stream-unary multi-callable, bytes in and out.
                mc = (channel or self.channel(command["target"])).stream_unary(command["path"])
                kind, requests = "stream_unary", raw_requests
                one = True
            else:
                one = False
            call, responses = self.call_and_cancel(
                mc, kind, requests, metadata, timeout, compression, command["cancel_after"], one
            )
        elif kind in ("unary_unary", "stream_unary"):
            argument = requests[0] if kind == "unary_unary" else iter(requests)
            try:
                response, call = mc.with_call(
                    argument, metadata=metadata, timeout=timeout, compression=compression
                )
                # None: the server ended the call with OK but no reply.
                if response is not None:
                    responses.append(response)
            except grpc.RpcError as e:
                call = e
            if not hasattr(call, "code"):
                raise RuntimeError(f"call failed without a status: {call!r}")
        else:
            acked = queue.Queue()
            if kind == "unary_stream":
                argument = requests[0]
            elif command.get("pingpong"):
                def argument_gen():
                    for index, request in enumerate(requests):
                        if index > 0 and acked.get(timeout=PINGPONG_WAIT_S) is None:
                            return
                        yield request

                argument = argument_gen()
            else:
                argument = iter(requests)
            call = mc(argument, metadata=metadata, timeout=timeout, compression=compression)
            try:
                for response in call:
                    responses.append(response)
                    acked.put(True)
            except grpc.RpcError:
                pass
            finally:
                acked.put(None)

        code = call.code()
        from grpc_status import rpc_status

        # Raises (ValueError) when the details' code or message is not the
        # call's: the command then answers with that error.
        rich = rpc_status.from_call(call)
        return {
            "code": code.value[0],
            "details": call.details() or "",
            "headers": metadata_to_json(call.initial_metadata()),
            "trailers": metadata_to_json(call.trailing_metadata()),
            "responses": [
                base64.b64encode(r if isinstance(r, bytes) else r.SerializeToString()).decode()
                for r in responses
            ],
            "rich_status": None if rich is None else base64.b64encode(rich.SerializeToString()).decode(),
        }

    def call_and_cancel(self, mc, kind, requests, metadata, timeout, compression, after, one):
        """Starts a call, cancels it once `after` replies arrived (0: once its
        response headers did) and returns (call, replies). A request stream
        stays open until the cancel (unless `one`: a unary request)."""
        cancelled = threading.Event()
        if kind in ("stream_unary", "stream_stream"):
            def argument_gen():
                yield from requests
                if not one:
                    cancelled.wait(CANCEL_WAIT_S)

            argument = argument_gen()
        else:
            argument = requests[0]
        if kind in ("unary_unary", "stream_unary"):
            call = mc.future(argument, metadata=metadata, timeout=timeout, compression=compression)
        else:
            call = mc(argument, metadata=metadata, timeout=timeout, compression=compression)
        responses = []
        try:
            if after == 0:
                call.initial_metadata()
            else:
                try:
                    for response in call:
                        responses.append(response)
                        if len(responses) >= after:
                            break
                except self.grpc.RpcError:
                    pass
            call.cancel()
        finally:
            cancelled.set()
        return call, responses


def serve(grpc, modules):
    driver = Driver(grpc, modules)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
        except ValueError as e:
            driver.write({"id": None, "error": f"bad command: {e}"})
            continue
        threading.Thread(target=driver.handle, args=(command,), daemon=True).start()
    sys.stdout.flush()
    # Calls still in flight die with the process; grpcio's own shutdown can
    # wait on them, so do not go through it.
    os._exit(0)


def example_channel(grpc, args):
    """The channel of `example`: cleartext, or TLS with --use_tls."""
    options = [("grpc.enable_http_proxy", 0)]
    if not args.use_tls:
        return grpc.insecure_channel(args.target, options=options)

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),
        private_key=read(args.key_file),
        certificate_chain=read(args.cert_file),
    )
    if args.server_host_override:
        options.append(("grpc.ssl_target_name_override", args.server_host_override))
    return grpc.secure_channel(args.target, credentials, options=options)


def example(grpc, args):
    """The example client's calls against `nameko.example`, printed as JSON lines."""
    import example_pb2
    import example_pb2_grpc

    Req = example_pb2.ExampleRequest
    channel = example_channel(grpc, args)
    stub = example_pb2_grpc.exampleStub(channel)

    def show(method, call):
        try:
            line = {
                "method": method,
                "replies": [{"message": r.message, "seqno": r.seqno} for r in call()],
            }
        except grpc.RpcError as e:
            line = {"method": method, "code": e.code().value[0], "details": e.details()}
        print(json.dumps(line), flush=True)

    show("unary_unary", lambda: [stub.unary_unary(Req(value="A", multiplier=2), timeout=30)])
    show("unary_stream", lambda: list(stub.unary_stream(Req(value="A", multiplier=2), timeout=30)))
    requests = [Req(value="A", multiplier=1), Req(value="B", multiplier=2)]
    show("stream_unary", lambda: [stub.stream_unary(iter(requests), timeout=30)])
    show("stream_stream", lambda: list(stub.stream_stream(iter(requests), timeout=30)))
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="folder of the generated stubs")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("serve", help="JSON-lines driver for the test harness")
    ex = sub.add_parser("example", help="call nameko.example and print the replies")
    ex.add_argument("--target", required=True, help="host:port, unix:PATH, unix-abstract:NAME")
    ex.add_argument("--use_tls", action="store_true", help="speak TLS")
    ex.add_argument("--ca_file", help="PEM file of the CA certificates to trust")
    ex.add_argument("--cert_file", help="PEM client certificate chain (mutual TLS)")
    ex.add_argument("--key_file", help="PEM client private key (mutual TLS)")
    ex.add_argument("--server_host_override", help="the name the server's certificate must carry")
    args = parser.parse_args()

    grpc, modules = import_stubs(args.stubs)
    if args.mode == "serve":
        serve(grpc, modules)
    else:
        example(grpc, args)


if __name__ == "__main__":
    main()
