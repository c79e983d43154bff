"""grpcio's own standard services, as peers of grpc-blocking's
(tests/tests/standard_services_grpcio.rs).

    python standard_services.py [--stubs DIR] serve

A driver like `client.py serve`: one JSON command per line on stdin, each
with an "id", answered by one JSON line on stdout with the same "id", in any
order (each command runs on a thread of its own). A command that fails
answers {"id": N, "error": "..."}. It ends when stdin closes. `--stubs` is
accepted for the harness's sake and unused: everything here comes from the
PyPI packages grpcio-health-checking (`grpc_health.v1`) and
grpcio-reflection (`grpc_reflection.v1alpha`), and every message type of the
reflection commands from the server under test.

Statuses are the names of `grpc.health.v1.HealthCheckResponse.ServingStatus`
("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"); codes are grpcio's
`StatusCode` names ("OK", "NOT_FOUND", ...). "target" is host:port.

    {"op": "version"}
        -> {"grpcio": "1.85.1", "protobuf": "...",
            "grpcio_health_checking": "1.85.1", "grpcio_reflection": "1.85.1"}

The health checking client (grpc_health.v1.health_pb2_grpc.HealthStub):

    {"op": "health_check", "target": T, "service": "", "timeout": 10}
        -> {"code": "OK", "details": ..., "status": "SERVING"}
           (status null when the call failed)
    {"op": "health_list", "target": T, "timeout": 10}
        -> {"code": "OK", "details": ..., "statuses": {"name": "SERVING", ...}}
    {"op": "health_watch", "target": T, "service": "", "timeout": 120}
        -> {"watch": W}: the Watch call is started, a thread reads it
    {"op": "watch_next", "watch": W, "wait": 10}
        -> the next thing the watch saw, in order, waiting up to "wait" s:
           {"event": "status", "status": "SERVING"}
           {"event": "end", "code": "OK", "details": ...}   the stream ended
           {"event": "nothing"}                             nothing in time
    {"op": "watch_cancel", "watch": W} -> {}

The reflection client (grpc_reflection.v1alpha's
ProtoReflectionDescriptorDatabase feeding a protobuf DescriptorPool):

    {"op": "reflect", "target": T, "services": ["nameko.example", ...]}
        -> {"listed": [every service get_services() names],
            "in_default_pool": [the named services' types that this process
                                knew before asking (none: no stubs loaded)],
            "services": {name: {"file": F, "methods": [{"name", "full_name",
                          "input", "output", "client_streaming",
                          "server_streaming"}]}},
            "files": {F: {"package", "dependencies", "messages", "enums",
                          "services"}},          each file, found by name
            "symbols": {full name: {"kind": "message" | "enum", "file": F,
                          "fields": [[name, number, type, type_name,
                                      repeated]]   (messages)
                          "values": [[name, number]]   (enums)}}}
        Every service is found with FindServiceByName and each of its methods
        with FindMethodByName in one pool; the files are those of the services
        and everything they import, transitively. Each file is then found by
        name, and each message and enum (nested ones too) by symbol, each with
        a fresh database and pool, so that every lookup is a question to the
        server.
    {"op": "dynamic_call", "target": T, "method": "nameko.example.unary_unary",
     "requests": [{json of a request}, ...], "timeout": 10}
        -> {"path": "/nameko.example/unary_unary", "kind": "unary_unary",
            "input": "nameko.ExampleRequest", "output": "nameko.ExampleReply",
            "code": "OK", "details": ..., "replies": [{json of a reply}, ...]}
        The method, its message classes (message_factory.GetMessageClass) and
        the call's kind all come from reflection; the call goes through the
        channel's generic multi-callable. Requests are protobuf JSON
        (json_format.ParseDict); replies are json_format.MessageToDict with
        the proto field names and every field printed.

grpcio's health server (grpc_health.v1.health.HealthServicer), on
127.0.0.1, several at once if asked:

    {"op": "health_serve", "statuses": {"": "SERVING", "svc.A": "NOT_SERVING"}}
        -> {"port": P}
    {"op": "health_set", "port": P, "service": "svc.A", "status": "SERVING"} -> {}
    {"op": "health_graceful", "port": P} -> {}
        HealthServicer.enter_graceful_shutdown(): everything NOT_SERVING
    {"op": "health_stop", "port": P, "grace": 1.0} -> {}
        server.stop(grace), waited for
"""

import argparse
import json
import os
import queue
import sys
import threading
from concurrent import futures
from importlib import metadata

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus
# The longest a "watch_next" waits.
WATCH_WAIT_MAX_S = 120.0
# How long a stopping server waits for its workers.
STOP_WAIT_S = 30.0


def kind_of(method):
    if method.client_streaming:
        return "stream_stream" if method.server_streaming else "stream_unary"
    return "unary_stream" if method.server_streaming else "unary_unary"


def is_repeated(field):
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return field.label == field.LABEL_REPEATED


def messages_and_enums(file):
    """Every message and enum of a file, nested ones too, as descriptors."""
    messages, enums = [], list(file.enum_types_by_name.values())

    def walk(message):
        messages.append(message)
        enums.extend(message.enum_types)
        for nested in message.nested_types:
            walk(nested)

    for message in file.message_types_by_name.values():
        walk(message)
    return messages, enums


def describe_message(message):
    fields = []
    for f in message.fields:
        type_desc = f.message_type or f.enum_type
        fields.append([f.name, f.number, f.type, type_desc.full_name if type_desc else "",
                       is_repeated(f)])
    return {"kind": "message", "file": message.file.name, "fields": fields}


def describe_enum(enum):
    return {"kind": "enum", "file": enum.file.name,
            "values": [[v.name, v.number] for v in enum.values]}


class Watch:
    """One Watch call, read by a thread of its own into a queue of events."""

    def __init__(self, call):
        self.call = call
        self.events = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            for response in self.call:
                self.events.put({"event": "status", "status": ServingStatus.Name(response.status)})
            self.events.put({"event": "end", "code": "OK", "details": self.call.details() or ""})
        except grpc.RpcError as e:
            self.events.put({"event": "end", "code": e.code().name, "details": e.details() or ""})


class Driver:
    def __init__(self):
        self.lock = threading.Lock()
        self.out_lock = threading.Lock()
        self.channels = {}
        self.watches = {}
        self.servers = {}

    def channel(self, target):
        with self.lock:
            channel = self.channels.get(target)
            if channel is None:
                # No proxy: the tests talk to loopback only.
                channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
                self.channels[target] = channel
            return channel

    def write(self, obj):
        line = json.dumps(obj)
        with self.out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def handle(self, command):
        cid = command.get("id")
        try:
            op = command.get("op")
            handler = getattr(self, "op_" + str(op), None)
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            answer = handler(command)
        except Exception as e:  # report, never die: other commands are in flight
            answer = {"error": f"{type(e).__name__}: {e}"}
        answer["id"] = cid
        self.write(answer)

    # -- version ------------------------------------------------------------

    def op_version(self, command):
        import google.protobuf

        return {
            "grpcio": grpc.__version__,
            "protobuf": google.protobuf.__version__,
            "grpcio_health_checking": metadata.version("grpcio-health-checking"),
            "grpcio_reflection": metadata.version("grpcio-reflection"),
        }

    # -- the health checking client ------------------------------------------

    def health_stub(self, command):
        return health_pb2_grpc.HealthStub(self.channel(command["target"]))

    def op_health_check(self, command):
        request = health_pb2.HealthCheckRequest(service=command.get("service", ""))
        try:
            response, call = self.health_stub(command).Check.with_call(
                request, timeout=command.get("timeout", 10))
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details() or "", "status": None}
        return {"code": call.code().name, "details": call.details() or "",
                "status": ServingStatus.Name(response.status)}

    def op_health_list(self, command):
        try:
            response = self.health_stub(command).List(
                health_pb2.HealthListRequest(), timeout=command.get("timeout", 10))
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details() or "", "statuses": None}
        return {"code": "OK", "details": "", "statuses": {
            name: ServingStatus.Name(r.status) for name, r in response.statuses.items()}}

    def op_health_watch(self, command):
        request = health_pb2.HealthCheckRequest(service=command.get("service", ""))
        call = self.health_stub(command).Watch(request, timeout=command.get("timeout", 120))
        with self.lock:
            wid = len(self.watches) + 1
            self.watches[wid] = Watch(call)
        return {"watch": wid}

    def op_watch_next(self, command):
        with self.lock:
            watch = self.watches[command["watch"]]
        wait = min(float(command.get("wait", 10)), WATCH_WAIT_MAX_S)
        try:
            return watch.events.get(timeout=wait)
        except queue.Empty:
            return {"event": "nothing"}

    def op_watch_cancel(self, command):
        with self.lock:
            watch = self.watches[command["watch"]]
        watch.call.cancel()
        return {}

    # -- the reflection client -----------------------------------------------

    def fresh_pool(self, target):
        """A pool on a database of its own: every lookup asks the server."""
        return descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel(target)))

    def op_reflect(self, command):
        target = command["target"]
        channel = self.channel(target)
        db = ProtoReflectionDescriptorDatabase(channel)
        listed = list(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)

        services = {}
        files = {}
        for name in command["services"]:
            service = pool.FindServiceByName(name)
            if service.full_name != name:
                raise AssertionError(f"FindServiceByName({name!r}) gave {service.full_name!r}")
            methods = []
            for m in service.methods:
                found = pool.FindMethodByName(m.full_name)
                if found.full_name != m.full_name or found.containing_service.full_name != name:
                    raise AssertionError(f"FindMethodByName({m.full_name!r}) gave {found.full_name!r}")
                methods.append({
                    "name": found.name,
                    "full_name": found.full_name,
                    "input": found.input_type.full_name,
                    "output": found.output_type.full_name,
                    "client_streaming": bool(found.client_streaming),
                    "server_streaming": bool(found.server_streaming),
                })
            services[name] = {"file": service.file.name, "methods": methods}
            stack = [service.file]
            while stack:
                f = stack.pop()
                if f.name not in files:
                    files[f.name] = f
                    stack.extend(f.dependencies)

        default_pool = descriptor_pool.Default()
        in_default_pool = []
        for f in files.values():
            for message in messages_and_enums(f)[0]:
                try:
                    default_pool.FindMessageTypeByName(message.full_name)
                    in_default_pool.append(message.full_name)
                except KeyError:
                    pass

        by_name = {}
        symbols = {}
        for name in sorted(files):
            f = self.fresh_pool(target).FindFileByName(name)
            messages, enums = messages_and_enums(f)
            by_name[name] = {
                "package": f.package,
                "dependencies": [d.name for d in f.dependencies],
                "messages": [m.full_name for m in messages],
                "enums": [e.full_name for e in enums],
                "services": [s.full_name for s in f.services_by_name.values()],
            }
            for m in messages:
                found = self.fresh_pool(target).FindMessageTypeByName(m.full_name)
                if found.full_name != m.full_name:
                    raise AssertionError(f"FindMessageTypeByName({m.full_name!r}) gave {found.full_name!r}")
                symbols[m.full_name] = describe_message(found)
            for e in enums:
                found = self.fresh_pool(target).FindEnumTypeByName(e.full_name)
                if found.full_name != e.full_name:
                    raise AssertionError(f"FindEnumTypeByName({e.full_name!r}) gave {found.full_name!r}")
                symbols[e.full_name] = describe_enum(found)
        return {"listed": listed, "in_default_pool": in_default_pool, "services": services,
                "files": by_name, "symbols": symbols}

    def op_dynamic_call(self, command):
        channel = self.channel(command["target"])
        pool = self.fresh_pool(command["target"])
        method = pool.FindMethodByName(command["method"])
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        path = f"/{method.containing_service.full_name}/{method.name}"
        kind = kind_of(method)
        requests = [json_format.ParseDict(r, request_class()) for r in command.get("requests", [])]
        callable_ = getattr(channel, kind)(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=reply_class.FromString,
        )
        if kind.startswith("unary_"):
            if len(requests) != 1:
                raise ValueError(f"{path} takes exactly one request, not {len(requests)}")
            argument = requests[0]
        else:
            argument = iter(requests)
        answer = {"path": path, "kind": kind, "input": method.input_type.full_name,
                  "output": method.output_type.full_name, "replies": []}
        timeout = command.get("timeout", 10)
        try:
            if kind.endswith("_unary"):
                reply, call = callable_.with_call(argument, timeout=timeout)
                replies = [reply]
            else:
                call = callable_(argument, timeout=timeout)
                replies = list(call)
            answer["code"] = call.code().name
            answer["details"] = call.details() or ""
        except grpc.RpcError as e:
            answer["code"] = e.code().name
            answer["details"] = e.details() or ""
            replies = []
        for reply in replies:
            if type(reply) is not reply_class:
                raise AssertionError(f"a reply of type {type(reply)!r}, not the reflected class")
            answer["replies"].append(json_format.MessageToDict(
                reply, preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True))
        return answer

    # -- grpcio's health server ----------------------------------------------

    def op_health_serve(self, command):
        servicer = health.HealthServicer()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        if port == 0:
            raise RuntimeError("could not bind 127.0.0.1:0")
        for name, status in command.get("statuses", {}).items():
            servicer.set(name, ServingStatus.Value(status))
        server.start()
        with self.lock:
            self.servers[port] = (server, servicer)
        return {"port": port}

    def server(self, command):
        with self.lock:
            return self.servers[command["port"]]

    def op_health_set(self, command):
        _, servicer = self.server(command)
        servicer.set(command["service"], ServingStatus.Value(command["status"]))
        return {}

    def op_health_graceful(self, command):
        _, servicer = self.server(command)
        servicer.enter_graceful_shutdown()
        return {}

    def op_health_stop(self, command):
        server, _ = self.server(command)
        if not server.stop(command.get("grace", 1.0)).wait(STOP_WAIT_S):
            raise RuntimeError(f"the server did not stop within {STOP_WAIT_S} s")
        return {}


def serve():
    driver = Driver()
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
    # Calls and servers still running die with the process; grpcio's own
    # shutdown can wait on them, so do not go through it.
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", help="unused: this peer needs no generated stubs")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("serve", help="JSON-lines driver for the test harness")
    parser.parse_args()
    serve()


if __name__ == "__main__":
    main()
