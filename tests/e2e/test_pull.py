"""A missing image is pulled (with progress) from a real registry: Debian's docker-registry on loopback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
import urllib.request

import pytest

from tests.helpers import RUN, RUN_LABEL, free_port, missing, qbctl, remove_stack

pytestmark = pytest.mark.docker


def _tiny_http_image(client, tag: str) -> None:
    """A 2 MB image: Debian's static busybox serving a page on 8080, like a UI image."""
    busybox = shutil.which("busybox")
    if not busybox or "static" not in subprocess.run(["file", "-L", busybox], capture_output=True, text=True).stdout:
        missing("a static busybox is needed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        page = b"<html>ok</html>"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    image = client.api.import_image_from_data(
        buf.getvalue(),
        repository=tag.rsplit(":", 1)[0],
        tag=tag.rsplit(":", 1)[1],
        changes=['CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]', f"LABEL {RUN_LABEL}={RUN}"],
    )
    assert image


@pytest.fixture
def registry(tmp_path, docker_client):
    binary = shutil.which("docker-registry")
    if not binary:
        missing("Debian's docker-registry is needed (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_a_missing_image_is_pulled_then_started(registry, project_env, tmp_path, docker_client):
    image = f"{registry}/qbtest/ui:pull"
    _tiny_http_image(docker_client, image)
    for line in docker_client.api.push(image.rsplit(":", 1)[0], tag="pull", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.api.remove_image(image)  # only the registry has it now
    env = {**project_env, "QBCTL_ADMINER_IMAGE": image}
    try:
        proc = qbctl("up", "adminer", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"adminer: pulling {image}" in proc.stderr
        assert docker_client.images.get(image)
        again = qbctl("up", "adminer", "--json", env=env, cwd=tmp_path)
        assert {s["action"] for s in json.loads(again.stdout)["services"]} == {"keep"}
    finally:
        try:
            remove_stack(env, tmp_path)  # first: an image a container still uses is only untagged
        finally:
            try:
                docker_client.api.remove_image(image, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
