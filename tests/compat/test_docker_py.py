"""docker-py (PyPI `docker` 7.x) drives isle through `isle system service`."""

from __future__ import annotations

import io
import tarfile
import time

import pytest

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


@pytest.fixture
def client(service):
    c = docker.DockerClient(base_url=service.host, timeout=60)
    yield c
    c.close()


def test_ping_version_info(client) -> None:
    assert client.ping() is True
    v = client.version()
    assert v["ApiVersion"] == "1.44" and v["Os"] == "linux"
    assert client.info()["OSType"] == "linux"


def test_run_foreground_and_exit_code(client) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo err >&2"], remove=True,
                                stderr=True)
    assert b"hello" in out and b"err" in out
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "exit 7"], remove=True)
    assert e.value.exit_status == 7
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("no-such-image:9")
    assert client.containers.list(all=True) == []


def test_detached_lifecycle(client) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "echo up; exec sleep 300"], detach=True,
                              name="py-web", labels={"app": "x"}, environment={"K": "V"})
    for _ in range(100):
        if b"up" in c.logs():
            break
        time.sleep(0.05)
    assert c.logs() == b"up\n"
    c.reload()
    assert c.status == "running" and c.name == "py-web" and c.labels == {"app": "x"}
    assert [x.name for x in client.containers.list(filters={"label": "app=x"})] == ["py-web"]
    r = c.exec_run(["sh", "-c", "echo $K; exit 3"])
    assert (r.exit_code, r.output) == (3, b"V\n")
    r = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    assert r.output == (b"o\n", b"e\n")
    top = c.top()
    assert any("sleep" in " ".join(p) for p in top["Processes"])
    c.stop(timeout=1)
    assert c.wait()["StatusCode"] == 137
    c.start()
    c.reload()
    assert c.status == "running"
    c.kill()
    c.reload()
    assert c.status == "exited"
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("nope-nope")
    c.remove()
    assert client.containers.list(all=True) == []


def test_logs_stream_and_timestamps(client) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; "
                                          "done"], detach=True)
    lines = [x for x in c.logs(stream=True, follow=True)]
    assert b"".join(lines) == b"1\n2\n3\n"
    ts = c.logs(timestamps=True).splitlines()
    assert len(ts) == 3 and ts[0].split(b" ", 1)[1] == b"1"
    assert c.logs(tail=1) == b"3\n"
    c.remove(force=True)


def test_archive_put_get(client) -> None:
    c = client.containers.run("busybox", ["sleep", "300"], detach=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"payload"
        ti = tarfile.TarInfo("f.txt")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    assert c.put_archive("/tmp", buf.getvalue())
    bits, stat = c.get_archive("/tmp/f.txt")
    raw = b"".join(bits)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        assert t.extractfile("f.txt").read() == b"payload"
    assert stat["name"] == "f.txt" and stat["size"] == 7
    # a member that climbs out of the destination is refused, nothing written
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as t:
        ti = tarfile.TarInfo("../../escape.txt")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(docker.errors.APIError):
        c.put_archive("/tmp", bad.getvalue())
    c.remove(force=True)


def test_images_networks_volumes(client) -> None:
    img = client.images.get("busybox")
    assert "busybox:latest" in img.tags
    img.tag("mine/bb", "v1")
    assert "mine/bb:v1" in client.images.get("mine/bb:v1").tags
    client.images.remove("mine/bb:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("mine/bb:v1")
    net = client.networks.create("pynet")
    vol = client.volumes.create("pyvol")
    srv = client.containers.run("busybox", ["sleep", "300"], detach=True, name="srv",
                                network="pynet", volumes={"pyvol": {"bind": "/v", "mode": "rw"}})
    out = client.containers.run("busybox", ["ping", "-c", "1", "-W", "5", "srv"], remove=True,
                                network="pynet")
    assert b"1 packets received" in out
    assert "pynet" in [n.name for n in client.networks.list()]
    assert "pyvol" in [v.name for v in client.volumes.list()]
    srv.remove(force=True)
    net.remove()
    vol.remove()


def test_events_and_bad_requests(client, service) -> None:
    since = time.time() - 1
    client.containers.run("busybox", ["true"], remove=True)
    evs = list(client.events(since=since, until=time.time() + 1, decode=True,
                             filters={"type": "container"}))
    assert {"create", "start", "die", "destroy"} <= {e["Action"] for e in evs}
    api = client.api
    # malformed JSON and wrong types: a 400 with Docker's message shape, never a traceback
    r = api._post(api._url("/containers/create"), data=b"{not json",
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "message" in r.json()
    r = api._post_json(api._url("/containers/create"), data={"Image": "busybox", "Cmd": 5})
    assert r.status_code == 400 and "Cmd" in r.json()["message"]
    r = api._post_json(api._url("/containers/create"),
                       data={"Image": "busybox", "HostConfig": {"Memory": "lots"}})
    assert r.status_code == 400 and "Memory" in r.json()["message"]
    assert "Traceback" not in service.logtext()
