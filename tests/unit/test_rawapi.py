"""stack/rawapi.py's HTTP/1.1 reading on a real unix socket: answers as an engine writes them (a length, chunks,
a connection kept between requests, a 404), and anything else as RawUnavailable, never a hang or a traceback."""

from __future__ import annotations

import socket
import threading

import pytest

from qbctl.stack import rawapi

DOCKER = b"Server: Docker/20.10.24 (linux)\r\nApi-Version: 1.41\r\n"


def serve(tmp_path, answers: list[bytes]) -> str:
    """A socket that answers each request read with the next of `answers`, on one connection."""
    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run():
        conn, _ = server.accept()
        data = b""
        with conn, server:
            for answer in answers:
                while b"\r\n\r\n" not in data:  # requests sent at once arrive in one read: one at a time
                    data += conn.recv(4096)
                data = data.split(b"\r\n\r\n", 1)[1]
                conn.sendall(answer)

    threading.Thread(target=run, daemon=True).start()
    return path


def test_a_length_then_chunks_then_a_404_on_one_connection(tmp_path):
    body = b'[{"Id": "abc", "Labels": {"io.qbctl.service": "postgres"}}]'
    chunked = b'{"Volumes": [{"Name": "qb_pgdata"}]}'
    path = serve(
        tmp_path,
        [
            b"HTTP/1.1 200 OK\r\n"
            + DOCKER
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body,
            b"HTTP/1.1 200 OK\r\n"
            + DOCKER
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, chunked[:10])
            + b"%x\r\n%s\r\n" % (len(chunked) - 10, chunked[10:])
            + b"0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\n" + DOCKER + b"Content-Length: 29\r\n\r\n" + b'{"message":"No such image x"}',
        ],
    )
    with rawapi.RawEngine(path) as api:
        assert api.get_json("/containers/json") == [{"Id": "abc", "Labels": {"io.qbctl.service": "postgres"}}]
        assert api.server == "Docker/20.10.24 (linux)"
        assert api.get_json("/volumes") == {"Volumes": [{"Name": "qb_pgdata"}]}
        assert api.get_json("/images/x/json", missing_ok=True) is None


def test_requests_sent_at_once_are_answered_in_turn(tmp_path):
    answers = [
        b"HTTP/1.1 200 OK\r\n" + DOCKER + b"Content-Length: %d\r\n\r\n" % len(b) + b
        for b in (b'{"Id": "sha256:1"}', b'{"Id": "sha256:2"}', b'{"Volumes": null}')
    ]
    chunked = (
        b"HTTP/1.1 200 OK\r\n" + DOCKER + b'Transfer-Encoding: chunked\r\n\r\n11\r\n{"Volumes": null}\r\n0\r\n\r\n'
    )
    path = serve(tmp_path, [*answers[:2], chunked])
    with rawapi.RawEngine(path) as api:
        got = api.get_many(["/images/a/json", "/images/b/json", "/volumes"])
    assert [rawapi.decode(*g) for g in got] == [{"Id": "sha256:1"}, {"Id": "sha256:2"}, {"Volumes": None}]


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
        b"HTTP/1.1 500 Internal Server Error\r\n" + DOCKER + b"Content-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n" + DOCKER + b"\r\n",  # no length: this reader does not guess
        b"HTTP/1.1 200 OK\r\n" + DOCKER + b"Content-Length: 9\r\n\r\nnot json!",
        b"HTTP/1.1 200 OK\r\n" + DOCKER + b"Content-Length: 100\r\n\r\n{}",  # the engine closes before the end
    ],
)
def test_anything_else_is_raw_unavailable(tmp_path, answer):
    path = serve(tmp_path, [answer])
    with rawapi.RawEngine(path, timeout=2) as api, pytest.raises(rawapi.RawUnavailable):
        api.get_json("/containers/json")


def test_no_socket_is_raw_unavailable(tmp_path):
    with pytest.raises(rawapi.RawUnavailable):
        rawapi.RawEngine(str(tmp_path / "none.sock"))


def test_a_ui_status_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as ok_server, socket.create_server(("127.0.0.1", 0)) as bad_server:

        def answer(server, line):
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(line)

        for server, line in (
            (ok_server, b"HTTP/1.1 200 OK\r\n\r\n"),
            (bad_server, b"HTTP/1.0 502 Bad Gateway\r\n\r\n"),
        ):
            threading.Thread(target=answer, args=(server, line), daemon=True).start()
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            free = closed.getsockname()[1]
        endpoints = [
            ("127.0.0.1", ok_server.getsockname()[1]),
            ("127.0.0.1", bad_server.getsockname()[1]),
            ("127.0.0.1", free),
        ]
        assert rawapi.http_statuses(endpoints, timeout=2) == [200, 502, None]
