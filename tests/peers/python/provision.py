"""Provision the virtualenv of the grpcio peers and generate their stubs.

Run by the test harness (tests/src/python.rs) with the system `python3`; it
needs nothing but the standard library:

    python3 provision.py --venv target/grpcio-venv \
        --requirements tests/peers/python/requirements.txt \
        --proto tests/proto/equivalence.proto --proto examples/proto/example.proto

* The virtualenv is created once, then reused while `requirements.txt` is
  unchanged: its SHA-256 is kept in `<venv>/provisioned.json`, written last.
  A changed file (or a half-made venv) makes a fresh venv.
* Stubs (`*_pb2.py`, `*_pb2_grpc.py`) are generated with grpcio-tools into
  `<venv>/stubs/<hash of the protos and requirements>/`, made in a temporary
  folder and renamed into place when complete. Nothing generated is committed.
* Concurrent runs (several test processes) serialise on an exclusive
  `flock` of `<venv>.lock`.

On success the last line on stdout is JSON: {"python": ..., "stubs": ...}.
On failure it exits non-zero with a message that says what to install or fix.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv

MARKER = "provisioned.json"


def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


def sha256_of(paths):
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.basename(path).encode())
        h.update(b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def venv_python(venv_dir):
    return os.path.join(venv_dir, "bin", "python")


def read_marker(venv_dir):
    try:
        with open(os.path.join(venv_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_logged(cmd, what, hint):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Everything goes to our stderr, which the harness keeps in a log file.
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n\n{hint}")


def make_venv(venv_dir, requirements, req_hash):
    if os.path.exists(venv_dir):
        shutil.rmtree(venv_dir)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    except Exception as e:  # ensurepip missing (Debian without python3-venv), ...
        fail(
            f"could not create a virtualenv at {venv_dir}: {e}\n"
            "Install Python 3 with the venv module and pip, e.g. on Debian/Ubuntu: "
            "`apt-get install python3 python3-venv python3-pip`."
        )
    if not os.path.exists(venv_python(venv_dir)):
        fail(
            f"the virtualenv at {venv_dir} has no bin/python; install python3-venv "
            "(`apt-get install python3-venv`)."
        )
    run_logged(
        [venv_python(venv_dir), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
         "-r", requirements],
        "pip install of the grpcio peers' requirements",
        "pip must reach the Python package index (https://pypi.org, or the index set in "
        "PIP_INDEX_URL) to install grpcio, grpcio-tools and protobuf at the versions pinned in "
        f"{requirements}.",
    )
    with open(os.path.join(venv_dir, MARKER + ".tmp"), "w") as f:
        json.dump({"requirements_sha256": req_hash, "python": sys.version}, f)
    os.replace(os.path.join(venv_dir, MARKER + ".tmp"), os.path.join(venv_dir, MARKER))


def make_stubs(venv_dir, protos, stubs_hash):
    stubs_root = os.path.join(venv_dir, "stubs")
    final = os.path.join(stubs_root, stubs_hash)
    if os.path.isdir(final):
        return final
    os.makedirs(stubs_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tmp-", dir=stubs_root)
    includes = []
    for proto in protos:
        d = os.path.dirname(os.path.abspath(proto))
        if d not in includes:
            includes.append(d)
    cmd = [venv_python(venv_dir), "-m", "grpc_tools.protoc"]
    cmd += ["-I" + d for d in includes]
    cmd += ["--python_out=" + tmp, "--grpc_python_out=" + tmp]
    cmd += [os.path.abspath(p) for p in protos]
    run_logged(cmd, "stub generation with grpc_tools.protoc", "check the .proto files named above.")
    os.rename(tmp, final)
    return final


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", required=True)
    parser.add_argument("--requirements", required=True)
    parser.add_argument("--proto", action="append", default=[])
    args = parser.parse_args()

    if sys.version_info < (3, 10):
        fail(
            f"Python >= 3.10 is needed for grpcio 1.85 (this is {sys.version.split()[0]}): "
            "install a newer python3, or name one in GRPC_BLOCKING_PYTHON."
        )
    for path in [args.requirements] + args.proto:
        if not os.path.isfile(path):
            fail(f"missing file: {path}")

    venv_dir = os.path.abspath(args.venv)
    os.makedirs(os.path.dirname(venv_dir), exist_ok=True)
    req_hash = sha256_of([args.requirements])
    stubs_hash = sha256_of([args.requirements] + args.proto)[:16]

    with open(venv_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = read_marker(venv_dir)
        if marker is None or marker.get("requirements_sha256") != req_hash:
            make_venv(venv_dir, args.requirements, req_hash)
        stubs = make_stubs(venv_dir, args.proto, stubs_hash)
    print(json.dumps({"python": venv_python(venv_dir), "stubs": stubs}), flush=True)


if __name__ == "__main__":
    main()
