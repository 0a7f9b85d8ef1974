"""Whether a Ray address names a cluster this machine can join: one sentence for each way it can be wrong, in seconds.

Given a wrong address, Ray itself retries for minutes and fills the terminal
with C++ warnings (a port where a web server answers), or ends in a long
traceback (a missing or wrong token).  `check` looks first, each step bounded:

1. the address is HOST:PORT and the host name resolves;
2. something listens at that port (TCP);
3. it speaks HTTP/2, as Ray's GCS (a gRPC server) does: a web server (Ray's
   dashboard on 8265, say), Redis or SSH answer otherwise, and say so;
4. a short-lived child process (`python -m engine.cluster_check ADDRESS`)
   asks the GCS for the cluster's metadata with Ray's own client.  That
   authenticates with this machine's token, tells the cluster's Ray and Python
   versions, and whether one of this machine's Ray nodes belongs to the
   cluster: a Ray driver needs one (`ray start --address=...` here first).
   The child keeps Ray's C++ logging and aborts out of this process and is
   killed at its deadline.

Tokens: Ray's token authentication reads `RAY_AUTH_TOKEN`, the file named by
`RAY_AUTH_TOKEN_PATH`, or `~/.ray/auth_token`; `use_token` points this process
at a token file (the add-on's *Ray Token File* preference, the CLI's
`--ray-token`) and turns token mode on whenever a token is known.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from .errors import EngineError

# Seconds for each network step; the whole check stays well under half a minute.
RESOLVE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 5.0
PROBE_TIMEOUT = 15.0
# What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
# How a web server's answer to that starts (a status line, or an error page without one).
WEB_ANSWERS = ("http/", "<!doctype html", "<html")
START_HEAD = "the port given to `ray start --head --port` on the head node (6379 unless changed)"


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT address; one sentence when it is not one."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EngineError(f"a Ray address is HOST:PORT, 'auto' or 'local', got {address!r}")
    return host, int(port)


def token_source() -> str | None:
    """Where Ray would find this machine's token, in words; None without one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN variable"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        return named
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def use_token(token_file: str | None = None) -> None:
    """Point Ray at `token_file` (when given) and turn token authentication on when a token is known.

    Ray reads these settings when it first connects, so this runs before; a
    token file that does not exist is one sentence.
    """
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file() or not path.read_text(encoding="utf-8", errors="replace").strip():
            raise EngineError(f"the Ray token file {path} does not exist or is empty; copy the head node's token "
                              "into it (`ray get-auth-token` on the head node prints it)")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    if "RAY_AUTH_MODE" not in os.environ and token_source() is not None:
        os.environ["RAY_AUTH_MODE"] = "token"


def check(address: str) -> None:
    """Raise EngineError with one sentence unless `address` is a Ray cluster this machine can join now."""
    host, port = split_address(address)
    where = f"{host}:{port}"
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and token_source() is None:
        raise EngineError(f"RAY_AUTH_MODE is 'token' but this machine has no Ray token for {where}: {_GET_TOKEN}")
    _check_answers(host, port, where)
    _check_with_ray(address, where)


_GET_TOKEN = ("copy the head node's token (`ray get-auth-token` there prints it) into ~/.ray/auth_token or a file "
              "named by RAY_AUTH_TOKEN_PATH (in Blender: Ray Token File in the add-on's preferences)")


def _check_answers(host: str, port: int, where: str) -> None:
    """Steps 1-3: the host resolves, the port is open, and what answers speaks HTTP/2."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # getaddrinfo has no timeout of its own
        lookup = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            found = lookup.result(timeout=RESOLVE_TIMEOUT)
        except socket.gaierror as exc:
            raise EngineError(f"cannot find the Ray head node's host {host!r} ({exc.strerror}); check the name "
                              "in the address") from None
        except concurrent.futures.TimeoutError:
            raise EngineError(f"looking up the Ray head node's host {host!r} took over {RESOLVE_TIMEOUT:.0f} s; "
                              "check the name in the address and this machine's network") from None
    family, kind, proto, _, sockaddr = found[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(sockaddr)
        except ConnectionRefusedError:
            raise EngineError(f"nothing listens at {where} (connection refused): start the head node there "
                              f"(`ray start --head --port={port}`) or correct the address") from None
        except TimeoutError:
            raise EngineError(f"no answer from {where} within {CONNECT_TIMEOUT:.0f} s: the machine is off or a "
                              "firewall blocks the port") from None
        except OSError as exc:
            raise EngineError(f"cannot reach the Ray cluster at {where}: {exc.strerror or exc}") from None
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.sendall(HTTP2_HELLO)
            answer = sock.recv(64)
        except TimeoutError:
            raise EngineError(f"{where} accepted the connection but does not answer like a Ray head node; use "
                              f"{START_HEAD}") from None
        except OSError:
            answer = b""
    if len(answer) >= 9 and answer[3] == SETTINGS_FRAME:
        return  # an HTTP/2 server, as Ray's GCS is
    shown = (answer.decode("ascii", "replace").strip().splitlines() or [""])[0][:60]
    if not shown:
        raise EngineError(f"{where} closed the connection without an answer: it is not a Ray head node; use "
                          f"{START_HEAD}")
    if shown.lower().startswith(WEB_ANSWERS):
        raise EngineError(f"{where} is a web server (it answered {shown!r}), not a Ray head node: Ray's dashboard "
                          f"is usually port 8265; use {START_HEAD}")
    raise EngineError(f"{where} is not a Ray head node (it answered {shown!r}); use {START_HEAD}")


def _check_with_ray(address: str, where: str) -> None:
    """Step 4: Ray's own client, in a child process, for the token, the versions and this machine's node."""
    try:
        done = subprocess.run([sys.executable, "-m", __name__, address], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EngineError(f"the Ray head node at {where} did not finish Ray's handshake within "
                          f"{PROBE_TIMEOUT:.0f} s; is it busy or still starting?") from None
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise EngineError(f"checking the Ray cluster at {where} failed: {last}") from None
    if found.get("error") == "token":
        source = token_source()
        if source is None:
            raise EngineError(f"the Ray cluster at {where} wants an authentication token and this machine has "
                              f"none: {_GET_TOKEN}")
        raise EngineError(f"the Ray cluster at {where} refused the token from {source}: it is not the head "
                          "node's token; copy the one `ray get-auth-token` prints on the head node")
    if "error" in found:
        raise EngineError(f"cannot reach the Ray cluster at {where}: {found['error']}")
    mine = _versions()
    theirs = found.get("ray"), found.get("python")
    if None not in theirs and tuple(theirs) != mine:
        raise EngineError(f"the Ray cluster at {where} runs Ray {theirs[0]} on Python {theirs[1]}, this machine "
                          f"Ray {mine[0]} on Python {mine[1]}: every node and this machine need the same versions "
                          f"(pip install ray=={theirs[0]} with Python {theirs[1]})")
    if not found.get("member"):
        raise EngineError(f"this machine is not a node of the Ray cluster at {where}, and Ray runs a shot only "
                          f"from one: join it first with `ray start --address={address}` (add --num-cpus=0 to "
                          "keep this machine's cores free), then run again")


def _versions() -> tuple[str, str]:
    import platform

    from importlib.metadata import version

    return version("ray"), platform.python_version()


def _probe(address: str) -> dict:
    """In the child: the cluster's versions and whether a Ray node of this machine belongs to it."""
    from ray._common.usage.usage_lib import get_cluster_metadata
    from ray._private.services import find_node_ids
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    from ray.exceptions import AuthenticationError

    try:
        client = GcsClient(address=address)
    except AuthenticationError:
        return {"error": "token"}
    except Exception as exc:  # noqa: BLE001 - reported as one line
        return {"error": (str(exc).splitlines() or [type(exc).__name__])[0][:200]}
    try:
        metadata = get_cluster_metadata(client)
    except Exception:  # noqa: BLE001 - a cluster without metadata: Ray skips its version check too
        metadata = {}
    alive = client.get_all_node_info(timeout=5, state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
    members = {node.hex() for node in alive}
    return {"ray": metadata.get("ray_version"), "python": metadata.get("python_version"),
            "member": any(node in members for node in find_node_ids())}


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])), flush=True)
