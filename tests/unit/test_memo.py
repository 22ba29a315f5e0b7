"""stack/memo.py's inputs: what a kept warm `up` answer was made from, and what makes it stale (pure logic)."""

from __future__ import annotations

import json

from qbctl.stack import memo

NAMES = ("DATABASE_URL", "HOME", "REDIS_URL")


def _inputs(root, start, environ, marked=True):
    return memo.inputs(str(root), str(start), ((), False), NAMES, marked, environ)


def test_the_same_inputs_are_equal_and_each_change_is_seen(tmp_path):
    project = tmp_path / "repo" / "project"
    (project / "sql" / "schema").mkdir(parents=True)
    (tmp_path / "repo" / ".git").mkdir()
    env = {"HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://u:secret@localhost:5432/db"}
    first = _inputs(project, project, env)
    assert _inputs(project, project, dict(env)) == first
    assert _inputs(project, project, {**env, "UNRELATED": "x"}) == first, "a variable no setting reads"
    assert _inputs(project, project, {**env, "REDIS_URL": "redis://localhost:6380/0"}) != first
    (project / ".env").write_text("LOG_LEVEL=DEBUG\n")
    with_env = _inputs(project, project, env)
    assert with_env != first
    (project / ".env").write_text("LOG_LEVEL=INFO\n")
    assert _inputs(project, project, env) != with_env, "the env file's content"
    assert b"secret" not in json.dumps(first, default=repr).encode(), "values are digested, never kept"


def test_an_unmarked_folder_is_looked_at_up_to_where_the_search_stopped(tmp_path):
    start = tmp_path / "repo" / "a" / "b"
    start.mkdir(parents=True)
    (tmp_path / "repo" / ".git").mkdir()
    env = {"HOME": str(tmp_path / "home")}
    first = _inputs(start, start, env, marked=False)
    (tmp_path / "repo" / "a" / ".env").write_text("")  # the search would now find the project here
    assert _inputs(start, start, env, marked=False) != first
    (tmp_path / "repo" / "a" / ".env").unlink()
    assert _inputs(start, start, env, marked=False) == first


def test_env_names_are_the_settings_the_engine_and_what_the_env_file_interpolates():
    names = memo.env_names(["DATABASE_URL"], "DATABASE_URL=postgresql://u:${PGPASS}@db/$PGDB\n")
    assert {"DATABASE_URL", "PGPASS", "PGDB", "DOCKER_HOST", "HOME"} <= set(names)


def test_the_signature_is_what_planning_depends_on():
    def decode(status, body):
        return json.loads(body)

    listed = [{"Id": "c1", "State": "running", "Status": "Up 3 minutes (healthy)", "ImageID": "i1", "Labels": {}}]
    paths = ["/images/redis/json", "/volumes?filters=x", "/containers/c2/json"]
    answers = [
        (200, b'{"Id": "sha256:1"}'),
        (200, b'{"Volumes": [{"Name": "v", "Labels": {"a": "b"}}]}'),
        (200, b'{"State": {"Status": "running", "OOMKilled": false}, "RestartCount": 0}'),
    ]
    sig = memo.signature(listed, paths, answers, decode)
    assert sig == (
        (("c1", "running", "healthy", "i1", ()),),
        ("sha256:1", (("v", (("a", "b"),)),), ("running", 0, False)),
    )
    later = [{**listed[0], "Status": "Up 9 minutes (healthy)"}]
    assert memo.signature(later, paths, answers, decode) == sig, "time passing changes nothing"
    restarted = [*answers[:2], (200, b'{"State": {"Status": "running", "OOMKilled": false}, "RestartCount": 1}')]
    assert memo.signature(listed, paths, restarted, decode) != sig
