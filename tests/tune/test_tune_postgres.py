"""``lit-compress tune`` workers in separate processes on one study in a real PostgreSQL server.

The module starts its own throwaway cluster (``initdb -A trust`` in a temporary directory, a unix socket there and
a free TCP port on 127.0.0.1, ``pg_ctl -w start``; stopped and deleted at the end); each test gets a fresh
database. As root, the server runs as ``nobody`` (``runuser``): initdb refuses to run as root. The tests skip only
where no server binaries (or no driver) exist.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from lit_compress.cli import main
from lit_compress.tune import open_storage
from lit_compress.tune.search import postgres_driver

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install 'lit-compress[postgres]'")

ROOT = Path(__file__).resolve().parents[2]
SPACE = {
    "alpha": {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0},
    "lr": {"key": "model.init_args.lr", "type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
}
TIMEOUT = 180  # seconds any one wait may take on a loaded 2-core machine (a normal run needs a fraction)
_databases = itertools.count()


def _server_binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """URL prefix ``postgresql://postgres@127.0.0.1:<port>`` of a PostgreSQL cluster running for this module."""
    initdb, pg_ctl = _server_binary("initdb"), _server_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as nobody, in a directory nobody owns
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root, and no `runuser` to start PostgreSQL as another user (initdb refuses root)")
        as_user = [runuser, "-u", "nobody", "--"]
    root = Path(tempfile.mkdtemp(prefix="lc-pg-", dir="/tmp" if as_user else None))
    if as_user:
        import pwd

        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
    port, data = _free_port(), root / "data"
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-sync"], **run)  # fmt: skip
        options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -F"
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                        "-o", options, "start"], **run)  # fmt: skip
    except subprocess.CalledProcessError as err:
        log = root / "server.log"
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"{err.cmd[len(as_user)]} failed: {err.stderr}{log.read_text() if log.exists() else ''}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database of the module's server."""
    name = f"optuna_{next(_databases)}"
    conn = psycopg2.connect(f"{postgres_server}/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"{postgres_server}/{name}"


def _config(path: Path, recipe: Path, out: Path, url: str, **options) -> Path:
    path.write_text(yaml.safe_dump({"recipe": str(recipe), "space": SPACE, "out_dir": str(out), "storage": url,
                                    "study_name": "shared", **options}))  # fmt: skip
    return path


def _worker(config: Path, seed: int, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_compress", "tune", "--config", str(config), "--seed", str(seed)]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(workers: list[subprocess.Popen]) -> None:
    logs = [w.communicate(timeout=TIMEOUT)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * len(workers), "\n\n".join(log[-3000:] for log in logs)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url, heartbeat_interval=None)
    return optuna.load_study(study_name="shared", storage=storage).trials


def _hold(marker: Path, started: Path) -> dict:
    return {"class_path": "tune_barrier.Hold", "init_args": {"marker": str(marker), "started": str(started)}}


def test_two_worker_processes_share_one_postgresql_study(tmp_path, tiny_recipe, postgres_url) -> None:
    out, barrier = tmp_path / "shared", tmp_path / "barrier"
    overrides = {"trainer": {"max_steps": 1, "limit_val_batches": 1, "callbacks": [
        {"class_path": "tune_barrier.Barrier", "init_args": {"directory": str(barrier), "parties": 2}}]}}  # fmt: skip
    config = _config(tmp_path / "tune.yaml", tiny_recipe, out, postgres_url, n_trials=4, trial_overrides=overrides,
                     heartbeat_interval=1, grace_period=5)  # fmt: skip
    workers = [_worker(config, seed, tmp_path) for seed in (1, 2)]
    _finish(workers)
    trials = _trials(postgres_url)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5 and len(complete) == len(trials)  # each worker overshoots by at most one
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # unique, no gaps
    assert len({t.user_attrs["trial_dir"] for t in trials}) == len(trials)
    assert {t.user_attrs["worker"] for t in trials} == {f"{socket.gethostname()}:{w.pid}" for w in workers}
    assert (out / "best.yaml").is_file() and (out / "trials.csv").is_file()


def test_a_killed_worker_s_trial_is_failed_retried_and_the_study_completes(tmp_path, tiny_recipe,
                                                                          postgres_url) -> None:  # fmt: skip
    out, marker, started = tmp_path / "shared", tmp_path / "hold", tmp_path / "started"
    grace = 2
    overrides = {"trainer": {"max_steps": 1, "limit_val_batches": 1, "callbacks": [_hold(marker, started)]}}
    config = _config(tmp_path / "tune.yaml", tiny_recipe, out, postgres_url, n_trials=3, trial_overrides=overrides,
                     heartbeat_interval=1, grace_period=grace, retries=1)  # fmt: skip
    marker.touch()
    doomed = _worker(config, 1, tmp_path)
    deadline = time.monotonic() + TIMEOUT
    while not started.is_dir() or not any(started.iterdir()):  # the worker is inside its first trial
        assert doomed.poll() is None, doomed.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first worker never started a trial"
        time.sleep(0.2)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate(timeout=TIMEOUT)
    killed_at = time.monotonic()
    (stale,) = _trials(postgres_url)
    assert stale.state.name == "RUNNING" and stale.user_attrs["worker"].endswith(f":{doomed.pid}")
    marker.unlink()
    time.sleep(max(0.0, killed_at + grace + 1 - time.monotonic()))  # its last heartbeat is older than the grace
    survivor = _worker(config, 2, tmp_path)
    _finish([survivor])
    trials = _trials(postgres_url)
    assert trials[0].number == stale.number and trials[0].state.name == "FAIL"
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and len(trials) == 4  # the stale trial, its retry and two new trials
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == stale.number]  # what Optuna's retry records
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == stale.params
    assert {t.user_attrs["worker"] for t in complete} == {f"{socket.gethostname()}:{survivor.pid}"}


def test_bad_or_unreachable_storage_is_a_one_line_error(tmp_path, tiny_recipe, postgres_server, capsys) -> None:
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"recipe": str(tiny_recipe), "space": SPACE, "out_dir": str(tmp_path / "t")}))
    closed = f"postgresql://postgres:secret@127.0.0.1:{_free_port()}/optuna"
    cases = {
        closed: r"cannot open the study storage 'postgresql://postgres:\*\*\*@127.0.0.1:\d+/optuna': connection to "
                r"server at \"127.0.0.1\", port \d+ failed: Connection refused",
        f"{postgres_server}/nope": r"cannot open the study storage .*/nope': .*database \"nope\" does not exist",
        "postgress://host/db": r"storage 'postgress://host/db' is not a database URL SQLAlchemy understands",
        "no url": r"storage 'no url' is not a database URL SQLAlchemy understands",
    }  # fmt: skip
    for url, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--config", str(config), "--storage", url])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "secret" not in err, err
        assert re.search(r"^lit-compress tune: error: " + message, err), err


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None,
                    reason="psycopg 3 is installed: SQLAlchemy's own default driver")
def test_postgresql_urls_get_the_installed_driver() -> None:
    assert postgres_driver("postgresql://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert postgres_driver("postgres://h/db") == "postgresql+psycopg2://h/db"
    assert postgres_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
