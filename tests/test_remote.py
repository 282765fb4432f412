"""URLs: download into the cache, bounds, pinning, errors, and a cached open without a connection.

Every test talks to a local HTTP server on 127.0.0.1 (port 0) started here, whose routes each test sets; the
cache is ``$FREDSET_CACHE`` in the test's temporary folder, so the user's cache is never touched.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import fredset
from fredset import FredDataset, FredsetError, save
from fredset import remote
from fredset.format import DEFAULT_MAX_FILE_BYTES as LIMIT
from fredset.progress import Progress, format_bytes
from fredset_cli.main import cli

from conftest import make_artifact


class Server:
    """A ThreadingHTTPServer whose GET routes (path -> function of the handler) the test sets; it records
    every request's path."""

    def __init__(self) -> None:
        self.routes: dict = {}
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404, "Not Found")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass  # the client gave up (an oversize or a timeout test)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(data: bytes, length: int | None | bool = True, headers: dict | None = None):
    """A route answering 200 with ``data``; Content-Length len(data) (``length`` True), a given number, or none
    (False: the body ends when the connection closes)."""
    def route(handler) -> None:
        handler.send_response(200)
        if length is True:
            handler.send_header("Content-Length", str(len(data)))
        elif length is not False:
            handler.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    return route


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("FREDSET_CACHE", str(folder))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 is reached directly
    return folder


@pytest.fixture
def local(tmp_path) -> tuple[Path, bytes]:
    path = tmp_path / "x.fredset"
    save(make_artifact(counts=(4, 3), channels=3, size=(8, 8), k=6), path)
    return path, path.read_bytes()


def files_in(folder: Path) -> list[Path]:
    """Every file under ``folder``, temporary files included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def no_connections(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was attempted")
    monkeypatch.setattr(socket, "create_connection", refuse)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- what is a URL, where the cache is -----------------------------------------------------------------------

def test_only_http_and_https_strings_are_urls():
    assert remote.is_url("http://example.org/a.fredset") and remote.is_url("HTTPS://example.org/a")
    for source in ("file:///tmp/a.fredset", "ftp://example.org/a", "a.fredset", " http://x/a", "https:/x",
                   Path("https://example.org/a"), b"https://example.org/a"):
        assert not remote.is_url(source), source


def test_cache_folder(monkeypatch, tmp_path):
    assert remote.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FREDSET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert remote.default_cache_dir() == tmp_path / "xdg" / "fredset"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # the XDG spec says: ignore a relative path
    assert remote.default_cache_dir() == tmp_path / "home" / ".cache" / "fredset"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert remote.default_cache_dir() == tmp_path / "home" / "Library" / "Caches" / "fredset"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "appdata"))
    assert remote.default_cache_dir() == tmp_path / "appdata" / "fredset" / "Cache"


def test_cache_names(tmp_path):
    url = "https://example.org/files/my%20data.fredset?x=1"
    entry = remote.cache_path(url)
    assert entry.parent == tmp_path / "cache" / "url" and entry.name.endswith("-my_data.fredset")
    assert remote.cache_path(url) == entry and remote.cache_path(url + "2") != entry
    digest = "AB" * 32
    assert remote.cache_path(url, sha256=digest) == tmp_path / "cache" / "sha256" / f"{'ab' * 32}.fredset"
    assert remote.cache_path("https://example.org/", cache_dir=tmp_path).name.endswith("-download.fredset")


# -- a good file, and a second open from the cache -----------------------------------------------------------

def test_a_url_reads_as_the_local_file(server, local, cache):
    path, data = local
    server.routes["/x.fredset"] = serve(data)
    url = server.url("/x.fredset")
    dataset = FredDataset(url)
    expected = FredDataset(path)
    assert torch.equal(dataset.images, expected.images) and torch.equal(dataset.targets, expected.targets)
    assert dataset.info.path == url and dataset.info.file_bytes == len(data)
    assert server.requests == ["/x.fredset"]
    [entry] = files_in(cache)
    assert entry == remote.cache_path(url) and entry.read_bytes() == data


def test_a_cached_open_makes_no_connection(server, local, monkeypatch):
    path, data = local
    server.routes["/x.fredset"] = serve(data)
    url = server.url("/x.fredset")
    first = fredset.load(url)
    assert server.requests == ["/x.fredset"]
    server.close()  # a download would now be refused, and any connection fails the test
    no_connections(monkeypatch)
    again = fredset.load(url)
    assert torch.equal(again.coefficients[0], first.coefficients[0])
    assert len(FredDataset(url)) == 7
    artifact, info = fredset.read_file(url)
    assert info.path == url and artifact.num_instances == 7
    assert server.requests == ["/x.fredset"]


def test_a_pinned_url_is_cached_by_its_hash_and_checked_again(server, local, cache, monkeypatch):
    path, data = local
    digest = hashlib.sha256(data).hexdigest()
    server.routes["/x.fredset"] = serve(data)
    server.routes["/mirror/x.fredset"] = serve(data)
    url = server.url("/x.fredset")
    assert len(FredDataset(url, sha256=digest.upper())) == 7
    entry = cache / "sha256" / f"{digest}.fredset"
    assert files_in(cache) == [entry]
    assert len(FredDataset(server.url("/mirror/x.fredset"), sha256=digest)) == 7  # same content, same entry
    assert server.requests == ["/x.fredset"]

    damaged = bytearray(data)
    damaged[-3] ^= 1
    entry.write_bytes(bytes(damaged))  # a damaged cached copy is noticed and downloaded again
    assert len(FredDataset(url, sha256=digest)) == 7
    assert server.requests == ["/x.fredset", "/x.fredset"] and entry.read_bytes() == data

    server.close()
    no_connections(monkeypatch)
    assert len(FredDataset(url, sha256=digest)) == 7


# -- what goes wrong: each a one-line FredsetError naming the URL, nothing cached ----------------------------

def assert_refused(url: str, cache: Path, match: str, **options) -> FredsetError:
    with pytest.raises(FredsetError, match=match) as caught:
        fredset.load(url, **options)
    message = str(caught.value)
    assert message.startswith(url + ": ") and "\n" not in message
    assert files_in(cache) == [], "something was cached"
    return caught.value


def test_http_404(server, cache):
    assert_refused(server.url("/missing.fredset"), cache, r"download failed: HTTP 404 Not Found$")


def test_http_500(server, cache):
    server.routes["/x.fredset"] = lambda handler: handler.send_error(500, "Broken")
    assert_refused(server.url("/x.fredset"), cache, "download failed: HTTP 500 Broken")


def test_connection_refused(cache):
    assert_refused(f"http://127.0.0.1:{closed_port()}/x.fredset", cache, "download failed: connection refused")


def test_truncated_transfer(server, local, cache):
    _, data = local
    server.routes["/x.fredset"] = serve(data[:1000], length=len(data))  # then the server closes the connection
    assert_refused(server.url("/x.fredset"), cache,
                   f"truncated download: 1000 of the {len(data)} bytes announced .Content-Length. arrived")


def test_oversize_refused_by_content_length_before_reading(server, cache):
    server.routes["/big.fredset"] = serve(b"x" * 100, length=10**12)
    started = time.monotonic()
    assert_refused(server.url("/big.fredset"), cache,
                   r"file is 1000000000000 bytes \(Content-Length\), larger than the 10000-byte limit",
                   max_file_bytes=10_000)
    assert time.monotonic() - started < 5


def test_oversize_without_content_length_is_stopped_during_the_download(server, cache):
    total = 64 * 2**20

    def endless(handler) -> None:  # no Content-Length: the body would end only when the connection closes
        handler.send_response(200)
        handler.end_headers()
        block = b"\0" * 2**16
        sent = 0
        try:
            while sent < total and not server.stop.is_set():
                handler.wfile.write(block)
                sent += len(block)
        finally:
            server.sent["/endless"] = sent

    server.routes["/endless"] = endless
    assert_refused(server.url("/endless"), cache, "larger than the 100000-byte limit .max_file_bytes.; the "
                   "download was stopped", max_file_bytes=100_000)
    deadline = time.monotonic() + 5
    while "/endless" not in server.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.sent["/endless"] < total  # the client hung up long before the end


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-content-length"])
def test_the_size_bound_is_exact(server, local, cache, length):
    _, data = local
    server.routes["/x.fredset"] = serve(data, length=length)
    assert_refused(server.url("/x.fredset"), cache, "larger than the", max_file_bytes=len(data) - 1)
    assert fredset.load(server.url("/x.fredset"), max_file_bytes=len(data)).num_instances == 7


def test_wrong_sha256_caches_nothing(server, local, cache):
    _, data = local
    server.routes["/x.fredset"] = serve(data)
    actual = hashlib.sha256(data).hexdigest()
    error = assert_refused(server.url("/x.fredset"), cache, f"sha256 mismatch: the download's SHA-256 is {actual}, "
                           f"not {'0' * 64}; nothing was cached", sha256="0" * 64)
    assert error.path == server.url("/x.fredset")
    assert (cache / "sha256").is_dir()  # the folder was made, but holds no file and no temporary file


def test_a_malformed_sha256_is_refused_before_any_request(server, local, cache):
    path, _ = local
    for value in ("abc", "g" * 64, "0" * 63, 123):
        with pytest.raises(FredsetError, match="sha256 must be 64 hexadecimal digits"):
            fredset.load(server.url("/x.fredset"), sha256=value)
        with pytest.raises(FredsetError, match="sha256 must be 64 hexadecimal digits"):
            FredDataset(path, sha256=value)
    assert server.requests == [] and files_in(cache) == []


def test_sha256_of_local_files_and_bytes(local):
    path, data = local
    digest = hashlib.sha256(data).hexdigest()
    assert len(FredDataset(path, sha256=digest)) == 7
    assert fredset.load_bytes(data, sha256=digest).num_instances == 7
    with open(path, "rb") as stream:
        assert fredset.load(stream, sha256=digest).num_instances == 7
    with pytest.raises(FredsetError, match=f"^{path}: sha256 mismatch: the file's SHA-256 is {digest}, not f+$"):
        fredset.load(path, sha256="f" * 64)
    with pytest.raises(FredsetError, match="<bytes>: sha256 mismatch"):
        fredset.load_bytes(data, sha256="f" * 64)


def test_a_slow_server_times_out(server, cache):
    server.routes["/slow"] = lambda handler: server.stop.wait(10)  # accepts, then never answers
    started = time.monotonic()
    with pytest.raises(FredsetError, match=r"download failed: no answer within 0.3 s \(timeout\)$"):
        remote.fetch(server.url("/slow"), max_file_bytes=LIMIT, timeout=0.3)
    assert time.monotonic() - started < 3
    assert files_in(cache) == []


def test_a_server_that_stalls_mid_body_times_out(server, local, cache):
    _, data = local

    def stalls(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:500])
        handler.wfile.flush()
        server.stop.wait(10)

    server.routes["/stalls"] = stalls
    started = time.monotonic()
    with pytest.raises(FredsetError, match=r"download failed after 500 bytes: no answer within 0.3 s"):
        remote.fetch(server.url("/stalls"), max_file_bytes=LIMIT, timeout=0.3)
    assert time.monotonic() - started < 3
    assert files_in(cache) == []


def test_a_file_the_reader_refuses_is_not_kept(server, local, cache):
    _, data = local
    server.routes["/x.fredset"] = serve(b"<html>please log in</html>" * 40)
    assert_refused(server.url("/x.fredset"), cache, "not a fredset file")
    server.routes["/x.fredset"] = serve(data)  # fixed on the server: the next open downloads it
    assert fredset.load(server.url("/x.fredset")).num_instances == 7
    assert server.requests == ["/x.fredset", "/x.fredset"]


def test_redirects_are_followed_to_http_only(server, local, cache):
    _, data = local

    def redirect(location: str):
        def route(handler) -> None:
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        return route

    server.routes["/x.fredset"] = serve(data)
    server.routes["/moved"] = redirect("/x.fredset")
    server.routes["/to-file"] = redirect("file:///etc/passwd")
    server.routes["/to-ftp"] = redirect("ftp://127.0.0.1/x.fredset")
    assert_refused(server.url("/to-file"), cache, "download failed")
    assert_refused(server.url("/to-ftp"), cache, "redirected .HTTP 302. to 'ftp://127.0.0.1/x.fredset', which is "
                   "not an http.s. URL")
    assert fredset.load(server.url("/moved")).num_instances == 7


def test_bad_options_and_urls(cache):
    with pytest.raises(FredsetError, match="not an http:// or https:// URL"):
        remote.fetch("ftp://example.org/x", max_file_bytes=LIMIT)
    with pytest.raises(FredsetError, match="timeout must be"):
        remote.fetch("http://127.0.0.1/x", max_file_bytes=LIMIT, timeout=0)
    with pytest.raises(FredsetError, match="timeout must be"):
        remote.fetch("http://127.0.0.1/x", max_file_bytes=LIMIT, timeout=float("inf"))
    with pytest.raises(FredsetError, match="invalid URL"):
        remote.fetch("http://127.0.0.1:notaport/x", max_file_bytes=LIMIT)
    with pytest.raises(FredsetError, match=r"^http://\*\*\*@127.0.0.1/x: URLs with a user name or password are not"):
        remote.fetch("http://user:secret@127.0.0.1/x", max_file_bytes=LIMIT)
    assert files_in(cache) == []


# -- progress -----------------------------------------------------------------------------------------------

def test_download_progress_is_shown_when_asked_and_silent_off_a_terminal(server, local, capsys):
    _, data = local
    server.routes["/x.fredset"] = serve(data)
    server.routes["/y.fredset"] = serve(data)
    remote.fetch(server.url("/x.fredset"), max_file_bytes=LIMIT)  # stderr is not a terminal here: nothing is written
    assert capsys.readouterr().err == ""
    remote.fetch(server.url("/y.fredset"), max_file_bytes=LIMIT, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(f"downloading y.fredset  {format_bytes(len(data))} / ")
    assert " 100%  " in lines[-1]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line():
    now = [0.0]
    stream = FakeTerminal()
    with Progress(4000, unit="B", label="copying", stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(4):
            now[0] += 0.5
            bar.update(1000)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 5  # 4 redraws + the final one
    assert text.rstrip().split("\r")[-1].startswith("copying  3.9 KiB / 3.9 KiB  100%  2.0 KiB/s")


def test_progress_off_a_terminal_writes_a_line_every_few_seconds():
    now = [0.0]
    stream = io.StringIO()
    bar = Progress(None, unit="it", stream=stream, every_seconds=5.0, clock=lambda: now[0])
    for _ in range(20):
        now[0] += 1.0
        bar.update(note="loss 0.5")
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == ["5 it  1 it/s  loss 0.5", "10 it  1 it/s  loss 0.5", "15 it  1 it/s  loss 0.5",
                     "20 it  1 it/s  loss 0.5"]  # the final state was shown already: not written twice
    stream = io.StringIO()
    bar = Progress(3, unit="it", stream=stream, every_seconds=5.0, clock=lambda: now[0])
    now[0] += 1.0
    bar.update()
    bar.close()
    assert stream.getvalue().splitlines() == ["1/3 it   33%  1 it/s"]  # one line, at the end


def test_a_resumed_count_leaves_earlier_work_out_of_the_rate():
    now = [100.0]
    stream = io.StringIO()
    bar = Progress(300, unit="it", label="distilling", stream=stream, every_seconds=5.0, clock=lambda: now[0])
    bar.resume_at(200)  # 200 iterations were done by an earlier process
    now[0] += 10.0
    bar.update(20)
    bar.close()
    assert stream.getvalue().splitlines()[-1] == "distilling  220/300 it   73%  2 it/s"


# -- the command line ---------------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_inspect_a_url(server, local, monkeypatch):
    _, data = local
    server.routes["/x.fredset"] = serve(data)
    url = server.url("/x.fredset")
    result = run("inspect", url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{url}: fredset format 1.0, checksum ok")
    digest = hashlib.sha256(data).hexdigest()
    result = run("inspect", url, "--json", "--sha256", digest)  # a pinned open: one more download
    assert result.exit_code == 0, result.output
    assert server.requests == ["/x.fredset", "/x.fredset"]
    server.close()
    no_connections(monkeypatch)
    assert run("inspect", url).exit_code == 0 and run("inspect", url, "--sha256", digest).exit_code == 0


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_a_bad_url_is_one_line_and_status_2(server, local, command):
    _, data = local
    server.routes["/x.fredset"] = serve(data)
    for args in ([server.url("/missing.fredset")], [server.url("/x.fredset"), "--sha256", "0" * 64],
                 [f"http://127.0.0.1:{closed_port()}/x.fredset"]):
        result = run(command, *args)
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and "Traceback" not in result.output
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("downloading ")]
        assert len(lines) == 1 and lines[0].startswith(f"error: {args[0]}: "), lines  # beside the progress
