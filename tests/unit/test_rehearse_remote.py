"""Where a remote project's rehearsal copy runs (pure, engines faked): the live server's image on the
developer's engine by its ID, else pulled by its registry digest, else one line; and the address the copy
is reached at for each kind of engine."""

from __future__ import annotations

import pytest

from qbctl.errors import QbctlError
from qbctl.transport.target import Target, parse
from qbctl.workflows.rehearse import _Home, _same_image

ID = "sha256:" + "ab" * 32


class FakeEngine:
    def __init__(self, images: dict, pullable: dict | None = None, url: str = "unix:///var/run/docker.sock"):
        self.images, self.pullable, self.pulled = dict(images), pullable or {}, []
        self.where = url
        self.target = parse(url, "test")
        self.last_pull_error = ""

    def image_info(self, ref):
        return self.images.get(ref)

    def pull_reference(self, ref):
        self.pulled.append(ref)
        if ref in self.pullable:
            self.images[ref] = self.pullable[ref]
            return self.pullable[ref]
        self.last_pull_error = "manifest unknown"
        return None


VM = FakeEngine(
    {ID: {"Id": ID, "RepoDigests": ["timescale/timescaledb@sha256:" + "cd" * 32], "Architecture": "amd64"}},
    url="ssh://deploy@vm",
)


def test_the_same_image_by_its_id_when_the_laptop_has_it():
    own = FakeEngine({ID: {"Id": ID}})
    assert _same_image(VM, own, "timescale/timescaledb:latest-pg15", ID) == ID
    assert own.pulled == []


def test_else_pulled_by_its_registry_digest():
    digest = "timescale/timescaledb@sha256:" + "cd" * 32
    own = FakeEngine({}, {digest: {"Id": ID, "Architecture": "amd64"}})
    assert _same_image(VM, own, "timescale/timescaledb:latest-pg15", ID) == ID
    assert own.pulled == [digest]


def test_an_image_of_another_architecture_is_refused():
    digest = "timescale/timescaledb@sha256:" + "cd" * 32
    own = FakeEngine({}, {digest: {"Id": "sha256:" + "ef" * 32, "Architecture": "arm64"}})
    with pytest.raises(QbctlError) as err:
        _same_image(VM, own, "timescale/timescaledb:latest-pg15", ID)
    assert err.value.code == "REHEARSAL_UNAVAILABLE"
    assert "is for arm64, the live server's for amd64" in err.value.message


def test_neither_there_nor_pullable_is_one_line_naming_the_image():
    own = FakeEngine({})
    with pytest.raises(QbctlError) as err:
        _same_image(VM, own, "timescale/timescaledb:latest-pg15", ID)
    assert err.value.code == "IMAGE_UNAVAILABLE"
    assert err.value.message.startswith("the live server's image timescale/timescaledb:latest-pg15 (sha256:abababab")
    assert "manifest unknown" in err.value.message and "nothing was done" in err.value.message
    built = FakeEngine({ID: {"Id": ID, "RepoDigests": []}}, url="ssh://deploy@vm")
    with pytest.raises(QbctlError) as err:
        _same_image(built, own, "qbctl-standin/postgres:test", ID)
    assert "it has no registry digest (built or loaded on that engine)" in err.value.message


@pytest.mark.parametrize(
    "url, publish, reached",
    [
        ("unix:///var/run/docker.sock", "127.0.0.1", ("127.0.0.1", 5999)),
        ("tcp://10.0.0.7:2375", "10.0.0.7", ("10.0.0.7", 5999)),
    ],
)
def test_the_copy_is_reached_where_its_engine_publishes_it(url, publish, reached):
    home = _Home(FakeEngine({}, url=url), ID, publish, "vm", True)
    assert home.reach(5999) == reached
    assert isinstance(home.eng.target, Target)
    assert home.engine == (
        "this machine's engine (unix:///var/run/docker.sock)" if url.startswith("unix") else f"your engine at {url}"
    )
