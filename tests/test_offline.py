"""Nothing phones home: scoring opens no network connection and writes nothing under $HOME.

A real ``stackscore score`` runs in a subprocess whose ``sitecustomize`` makes every name
lookup and every socket connection fail and records it, with an empty temporary $HOME, on
both backends (OpenVINO imported OpenVINO's telemetry, which looked up
www.google-analytics.com and wrote ~/intel/stats; ONNX Runtime 1.32 wrote a device id under
~/.cache/Microsoft). Both must stay silent.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SITECUSTOMIZE = r'''
import socket, traceback
_LOG = __import__("os").environ["NET_LOG"]
def _record(what):
    with open(_LOG, "a") as fh:
        fh.write(what + "\n" + "".join(traceback.format_stack(limit=8)) + "\n")
    raise OSError("network disabled by the test")
def getaddrinfo(*a, **k):
    _record(f"getaddrinfo {a!r}")
def connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):  # local IPC is not the network
        return _connect(self, address)
    _record(f"connect {address!r}")
def connect_ex(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect_ex(self, address)
    _record(f"connect_ex {address!r}")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
'''


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_scoring_opens_no_socket_and_writes_nothing_in_home(artifact, corpus_rows, tmp_path, backend):
    pytest.importorskip(backend)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "net.log"
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"id": {i}, "text": "{r["text"]}"}}\n' for i, r in enumerate(corpus_rows[:20])))
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "CI")}
    env.update(HOME=str(home), NET_LOG=str(log), PYTHONPATH=os.pathsep.join([str(site), *sys.path]))
    res = subprocess.run(
        [sys.executable, "-m", "stackscore", "score", str(artifact), str(src), "-o", str(tmp_path / "o.jsonl"),
         "--backend", backend, "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 0, res.stderr
    assert f"{backend}/" in res.stderr  # the backend asked for really ran
    assert not log.exists(), log.read_text()
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
