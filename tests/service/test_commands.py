"""``visloc query`` and ``visloc serve`` on the command line, and the Python client's errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from visloc import client
from visloc.cli import app
from visloc.datasets import Frame, load_frames
from visloc.errors import ConfigError, InputError, VislocError
from visloc.localization import Localizer

from .helpers import LiveServer, noise, png_bytes

runner = CliRunner()
VISLOC = Path(sys.executable).with_name("visloc")


@pytest.fixture(scope="module")
def frame(tiny_world: Path) -> Frame:
    return load_frames(tiny_world, split="test").frames[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error(args: list[str]) -> VislocError:
    """The error ``visloc ARGS`` stops with (what `visloc.cli.main` reports with exit code 2)."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, VislocError), (result.output, repr(result.exception))
    return result.exception


def test_query_prints_the_pose(map_server: LiveServer, tiny_map: Path, frame: Frame) -> None:
    camera = frame.camera.to_colmap_string()
    result = runner.invoke(app, ["query", map_server.url, str(frame.image_path), "--camera", camera])
    assert result.exit_code == 0, result.output
    from visloc.io.images import read_image

    expected = Localizer(tiny_map).localize_image(read_image(frame.image_path), frame.camera)
    assert expected.pose is not None
    first = result.output.splitlines()[0].split()
    assert first[0] == frame.image_path.name
    assert [float(v) for v in first[1:]] == expected.pose.qvec.tolist() + expected.pose.t.tolist()
    assert "inliers" in result.output and "intrinsics from the request" in result.output

    result = runner.invoke(app, ["query", map_server.url, str(frame.image_path), "--camera", camera, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["pose"]["qvec"] == expected.pose.qvec.tolist()

    result = runner.invoke(app, ["query", map_server.url, str(frame.image_path), "--retrieve", "--num", "3"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 3
    assert [line.split()[1] for line in result.output.splitlines()] == expected.retrieved[:3]


def test_query_not_localized(map_server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "black.png"
    path.write_bytes(png_bytes(noise() * 0))
    result = runner.invoke(app, ["query", map_server.url, str(path), "--camera", "PINHOLE 64 48 50 50 31.5 23.5"])
    assert result.exit_code == 0 and "black.png: not localized (" in result.output


def test_query_errors_name_the_problem(map_server: LiveServer, frame: Frame, tmp_path: Path) -> None:
    err = _error(["query", map_server.url, str(frame.image_path), "--camera", "PINHOLE 320 240 nan 1 2 3"])
    assert isinstance(err, ConfigError) and str(err).startswith("--camera 'PINHOLE 320 240 nan 1 2 3': ")
    err = _error(["query", map_server.url, str(tmp_path / "missing.jpg")])
    assert isinstance(err, InputError) and str(err) == f"{tmp_path / 'missing.jpg'}: image file does not exist"
    err = _error(["query", map_server.url, str(frame.image_path), "--token-file", str(tmp_path / "token")])
    assert isinstance(err, InputError) and "token file does not exist" in str(err)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    err = _error(["query", map_server.url, str(text), "--camera", "PINHOLE 64 48 50 50 31.5 23.5"])
    assert isinstance(err, client.ServiceError) and err.status == 415
    assert str(err) == f"{map_server.url}/v1/localize: HTTP 415: not a JPEG or PNG image"
    err = _error(["query", map_server.url, str(frame.image_path)])  # no intrinsics, no EXIF
    assert isinstance(err, client.ServiceError) and err.status == 422 and "no intrinsics" in err.detail


def test_client_without_a_server() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(client.ServiceError) as error:
        client.localize(url, png_bytes(noise()), "PINHOLE 64 48 50 50 31.5 23.5", timeout=5)
    assert error.value.status is None and str(error.value).startswith(f"{url}/v1/localize: no answer: ConnectError")


def test_serve_errors_name_the_problem(tmp_path: Path, tiny_map: Path) -> None:
    err = _error(["serve", str(tmp_path / "nope")])
    assert isinstance(err, InputError) and str(err) == (f"{tmp_path / 'nope'}: map folder does not exist; build one "
                                                        "with `visloc map build`")
    err = _error(["serve", str(tmp_path)])
    assert isinstance(err, InputError) and "is not a visloc map (no map.json)" in str(err)
    empty = tmp_path / "empty_token"
    empty.write_text("\n")
    err = _error(["serve", str(tiny_map), "--token-file", str(empty)])
    assert isinstance(err, InputError) and str(err) == f"{empty}: token file is empty"
    err = _error(["serve", str(tiny_map), "--workers", "0"])
    assert isinstance(err, ConfigError) and "workers must be a positive integer" in str(err)
    err = _error(["serve", str(tiny_map), "--max-body-mb", "nan"])
    assert isinstance(err, ConfigError) and str(err) == "--max-body-mb must be a positive number, got nan"
    err = _error(["serve", str(tiny_map), "--method", "magic"])
    assert isinstance(err, ConfigError) and "magic" in str(err)


def test_serve_stops_when_the_map_fails_to_load(tmp_path: Path) -> None:
    broken = tmp_path / "map"
    broken.mkdir()
    (broken / "map.json").write_text("{not json")
    err = _error(["serve", str(broken), "--port", str(_free_port())])
    assert isinstance(err, InputError) and str(err).startswith(f"{broken / 'map.json'}: invalid JSON")


def test_serve_and_query_as_processes(tiny_map: Path, frame: Frame, tmp_path: Path) -> None:
    """The installed command: serves, answers `visloc query` with the token, shuts down on SIGINT; a
    missing map is a one-line error with exit code 2."""
    token = tmp_path / "token"
    token.write_text("abc123\n")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([str(VISLOC), "serve", str(tiny_map), "--port", str(port), "--token-file", str(token)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "visloc serve did not become ready"
            try:
                if httpx.get(url + "/v1/health").status_code == 200:
                    break
            except httpx.ConnectError:
                pass
            time.sleep(0.1)
        result = runner.invoke(app, ["query", url, str(frame.image_path), "--camera",
                                     frame.camera.to_colmap_string(), "--token-file", str(token)])
        assert result.exit_code == 0 and result.output.startswith(frame.image_path.name), result.output
        err = _error(["query", url, str(frame.image_path), "--camera", frame.camera.to_colmap_string()])
        assert isinstance(err, client.ServiceError) and err.status == 401
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    # uvicorn finishes the shutdown, then lets the interrupt end the process (exit code 130, as Ctrl-C)
    assert server.returncode == 130 and "Application shutdown complete" in stderr, stderr
    assert "Traceback" not in stderr and "abc123" not in stderr
    missing = subprocess.run([str(VISLOC), "serve", str(tmp_path / "nope")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nope'}: map folder does not exist" in missing.stderr

