"""send_listener speaks the OCI seccomp-agent protocol: one JSON message with the fd attached."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from isle.errors import ConfigError
from isle.runtime.seccomp import send_listener

STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/b",
         "annotations": {"a": "b"}}


@pytest.mark.parametrize("meta_in_state", [False, True])
def test_message_and_fd_reach_the_agent(tmp_path: Path, meta_in_state: bool) -> None:
    path = str(tmp_path / "agent.sock")
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
        agent.bind(path)
        agent.listen(1)
        if meta_in_state:
            send_listener(path, w, {**STATE, "metadata": "MKNOD=/dev/null"})
        else:
            send_listener(path, w, STATE, metadata="MKNOD=/dev/null")
        conn, _ = agent.accept()
        with conn:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
    os.close(w)
    assert len(fds) == 1
    msg = json.loads(data)
    assert msg == {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 4242,
                   "metadata": "MKNOD=/dev/null", "state": STATE}
    os.write(fds[0], b"via the passed fd")  # it is our pipe's write end
    os.close(fds[0])
    assert os.read(r, 100) == b"via the passed fd"
    os.close(r)


def test_no_agent_is_an_error_naming_listener_path(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ConfigError, match=r"^linux.seccomp.listenerPath: cannot hand"):
            send_listener(str(tmp_path / "nobody.sock"), w, STATE)
    finally:
        os.close(r)
        os.close(w)
