"""A local STAC API and asset server for a catalogue on disk (tests, demo, benchmarks).

The catalogue folder holds ``collections.json`` (a JSON list of STAC Collections),
``items.ndjson`` (one STAC Item per line, asset hrefs relative to the folder) and the assets
(COGs). :func:`serve_catalog` serves it over real HTTP on the loopback interface:

* the **STAC API** is ``rustac serve items.parquet`` (rustac 0.9.9, DuckDB backend) in a child
  process. The items are copied to a temporary stac-geoparquet file with every relative asset
  href made absolute (``{asset_url}/{href}``); the source files are never modified. DuckDB
  finds its extensions through a temporary ``HOME`` whose ``.duckdb/extensions`` points at the
  ``rustac-duckdb-extensions`` wheel, so nothing is downloaded;
* the **asset server** is Starlette's ``StaticFiles`` under uvicorn in a background thread,
  rooted at the catalogue folder. It answers HTTP Range requests with 206, counts the bytes it
  sends per path, and can inject faults (HTTP errors, delays, truncated bodies) described by a
  :class:`FaultConfig`.

``python -m glacimap.synthetic.serve WORLD/stac`` runs both in the foreground until Ctrl-C.
Details and limitations: docs/stac-server.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import http.client
import importlib.metadata
import json
import logging
import os
import posixpath
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from glacimap.errors import (
    ConfigError,
    GlacimapError,
    InputNotFoundError,
    InvalidInputError,
)
from glacimap.workspace import atomic_path

log = logging.getLogger(__name__)

COLLECTIONS_FILE = "collections.json"
ITEMS_FILE = "items.ndjson"
#: The rustac release whose ``serve`` works offline with the bundled DuckDB extensions.
RUSTAC_VERSION = "0.9.9"
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 3

FaultKind = Literal["error", "delay", "truncate"]
_FAULT_KINDS = ("error", "delay", "truncate")


class ServeError(GlacimapError, RuntimeError):
    """A local server could not be started or stopped."""


# -- fault injection ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """One fault of the asset server.

    ``pattern`` is an ``fnmatch`` pattern on the request path relative to the asset root
    (``"assets/sentinel-2-l2a/*/red.tif"``; ``*`` also matches ``/``). Every distinct path that
    matches gets the fault on its first ``times`` requests:

    * ``"error"``: answer HTTP ``status`` with a short text body (any method);
    * ``"delay"``: wait ``delay_s`` seconds, then answer normally (any method), so a client with
      a shorter timeout times out;
    * ``"truncate"``: send the headers (with the full ``Content-Length``) and only
      ``keep_fraction`` of the body, then close the connection (GET only).
    """

    pattern: str
    kind: FaultKind
    times: int = 1
    status: int = 500
    delay_s: float = 5.0
    keep_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ConfigError(f"fault kind {self.kind!r} is not one of {list(_FAULT_KINDS)}")
        if not self.pattern:
            raise ConfigError("fault pattern is empty; give a path pattern such as 'assets/*/red.tif'")
        if self.times < 1:
            raise ConfigError(f"fault {self.pattern!r}: times must be >= 1, got {self.times}")
        if not 400 <= self.status <= 599:
            raise ConfigError(f"fault {self.pattern!r}: status must be an HTTP error (400-599), got {self.status}")
        if not self.delay_s > 0:
            raise ConfigError(f"fault {self.pattern!r}: delay_s must be > 0, got {self.delay_s}")
        if not 0.0 <= self.keep_fraction < 1.0:
            raise ConfigError(
                f"fault {self.pattern!r}: keep_fraction must be in [0, 1), got {self.keep_fraction}"
            )
        object.__setattr__(self, "pattern", self.pattern.lstrip("/"))

    def matches(self, path: str, method: str) -> bool:
        if self.kind == "truncate" and method != "GET":
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


@dataclass(frozen=True)
class FaultConfig:
    """Faults of the asset server, tried in order: a request gets the first matching fault
    whose count for that path is not used up (so ``error`` then ``truncate`` on the same path
    fails the first request, truncates the second and serves the third)."""

    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", tuple(self.faults))
        for fault in self.faults:
            if not isinstance(fault, Fault):
                raise ConfigError(f"FaultConfig takes Fault objects, got {fault!r}")


class _AssetState:
    """Counters and faults shared between the asset server thread and the caller (locked)."""

    def __init__(self, faults: FaultConfig | None) -> None:
        self._lock = threading.Lock()
        self._faults = faults or FaultConfig()
        self._fired: dict[tuple[int, str], int] = {}
        self._bytes: dict[str, int] = {}
        self._requests: dict[str, int] = {}

    def begin(self, path: str, method: str) -> Fault | None:
        """Count a request and return the fault it gets, if any."""
        with self._lock:
            self._requests[path] = self._requests.get(path, 0) + 1
            for index, fault in enumerate(self._faults.faults):
                if not fault.matches(path, method):
                    continue
                used = self._fired.get((index, path), 0)
                if used < fault.times:
                    self._fired[(index, path)] = used + 1
                    return fault
            return None

    def add_bytes(self, path: str, count: int) -> None:
        with self._lock:
            self._bytes[path] = self._bytes.get(path, 0) + count

    def set_faults(self, faults: FaultConfig | None) -> None:
        with self._lock:
            self._faults = faults or FaultConfig()
            self._fired.clear()

    def bytes_served(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes)

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def reset_counters(self) -> None:
        with self._lock:
            self._bytes.clear()
            self._requests.clear()


class _AssetApp:
    """ASGI app: StaticFiles rooted at the catalogue, wrapped with byte counting and faults."""

    def __init__(self, root: Path, state: _AssetState) -> None:
        from starlette.staticfiles import StaticFiles

        # follow_symlink: a generator may link identical assets; ".." is still refused.
        self._files = StaticFiles(directory=root, follow_symlink=True)
        self._state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import anyio
        from starlette.exceptions import HTTPException
        from starlette.responses import PlainTextResponse

        path = scope["path"].lstrip("/")
        fault = self._state.begin(path, scope["method"])
        # Bytes sent after the client hung up are dropped by uvicorn: stop counting then.
        disconnected = [False]

        async def watching_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected[0] = True
            return message

        counting_send = self._counting(path, send, disconnected)
        if fault is not None and fault.kind == "error":
            response = PlainTextResponse(f"injected fault: HTTP {fault.status}\n", status_code=fault.status)
            await response(scope, watching_receive, counting_send)
            return
        if fault is not None and fault.kind == "delay":
            await anyio.sleep(fault.delay_s)
        if fault is not None and fault.kind == "truncate":
            counting_send = _truncating(counting_send, fault.keep_fraction)
        try:
            await self._files(scope, watching_receive, counting_send)
        except HTTPException as exc:  # 404, 405: raised before anything was sent
            response = PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)
            await response(scope, watching_receive, counting_send)

    def _counting(self, path: str, send: Any, disconnected: list[bool]) -> Any:
        async def wrapped(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not disconnected[0]:
                self._state.add_bytes(path, len(message.get("body", b"")))

        return wrapped


def _truncating(send: Any, keep_fraction: float) -> Any:
    """Wrap ``send`` so that only ``keep_fraction`` of the body goes out.

    The rest is dropped, so the app returns without completing the response and uvicorn
    closes the connection: the client sees fewer bytes than ``Content-Length`` announced.
    """
    budget: list[int | None] = [None]

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            length = headers.get(b"content-length")
            if length is not None:
                budget[0] = int(int(length) * keep_fraction)
            await send(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        if budget[0] is None:  # no Content-Length: cut the first chunk
            budget[0] = int(len(body) * keep_fraction)
        if budget[0] <= 0:
            return
        part = body[: budget[0]]
        budget[0] -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": True})

    return wrapped


class _AssetServer:
    """uvicorn serving :class:`_AssetApp` in a daemon thread, on a socket bound up front."""

    def __init__(self, root: Path, host: str, port: int | None, state: _AssetState) -> None:
        import uvicorn

        self._socket = _bind(host, port or 0)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            _AssetApp(root, state),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="glacimap-asset-server", daemon=True
        )

    def start(self, timeout: float) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServeError(f"the asset server on port {self.port} stopped during start-up (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServeError(f"the asset server on port {self.port} did not start within {timeout:.0f} s")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout / 2)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout / 2)
            if self._thread.is_alive():
                log.error("the asset server thread did not stop within %.0f s", timeout)
        self._socket.close()


# -- the served catalogue -----------------------------------------------------------------------
@dataclass(frozen=True)
class LocalStac:
    """A running local STAC API (``stac_url``) and asset server (``asset_url``)."""

    stac_url: str
    asset_url: str
    stac_dir: Path
    #: stdout/stderr of ``rustac serve`` (removed with the temporary folder on exit)
    log_path: Path
    _state: _AssetState = field(repr=False, compare=False)
    _process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    _assets: _AssetServer = field(repr=False, compare=False)

    def asset_href(self, relative: str) -> str:
        """The URL of an asset given by its path relative to ``stac_dir``."""
        return f"{self.asset_url}/{quote(relative.lstrip('/'), safe='/')}"

    def bytes_served(self) -> dict[str, int]:
        """Body bytes sent per asset path (relative to ``stac_dir``) since the last reset."""
        return self._state.bytes_served()

    def request_counts(self) -> dict[str, int]:
        """HTTP requests received per asset path since the last reset."""
        return self._state.request_counts()

    def reset_counters(self) -> None:
        """Zero :meth:`bytes_served` and :meth:`request_counts`."""
        self._state.reset_counters()

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Replace the asset server's faults (``None``: none) and restart their counts."""
        self._state.set_faults(faults)

    def running(self) -> bool:
        """True while both servers are up."""
        return self._process.poll() is None and self._assets.alive()


@contextlib.contextmanager
def serve_catalog(
    stac_dir: Path | str,
    host: str = "127.0.0.1",
    stac_port: int | None = None,
    asset_port: int | None = None,
    faults: FaultConfig | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[LocalStac]:
    """Serve the catalogue in ``stac_dir`` until the ``with`` block ends.

    Ports default to free ones. Raises :class:`InputNotFoundError` / :class:`InvalidInputError`
    for a missing or malformed catalogue and :class:`ServeError` when a server does not answer
    within ``startup_timeout`` seconds (the temporary folder with rustac's log is then kept and
    named in the message). Both servers are stopped on exit.
    """
    stac_dir = Path(stac_dir).expanduser().absolute()
    items = _read_items(stac_dir)
    _check_collections(stac_dir, items)
    command = _rustac_command()
    extensions = _duckdb_extension_directory()

    state = _AssetState(faults)
    assets = _AssetServer(stac_dir, host, asset_port, state)
    tmp = Path(tempfile.mkdtemp(prefix="glacimap-stac-"))
    process: subprocess.Popen[bytes] | None = None
    started = False
    keep_tmp = False
    try:
        assets.start(startup_timeout)
        asset_url = f"http://{_netloc(host, assets.port)}"
        env = _rustac_env(_duckdb_home(tmp / "home", extensions))
        parquet = tmp / "items.parquet"
        _write_parquet(command, _absolute_hrefs(items, stac_dir, asset_url), parquet, env, stac_dir / ITEMS_FILE)
        log_path = tmp / "rustac.log"
        process, stac_url = _start_rustac(command, parquet, host, stac_port, env, log_path, startup_timeout)
        log.info("serving %s: STAC API %s, assets %s", stac_dir, stac_url, asset_url)
        started = True
        yield LocalStac(stac_url, asset_url, stac_dir, log_path, state, process, assets)
    except ServeError:
        keep_tmp = not started
        raise
    finally:
        if process is not None:
            _stop_process(process)
        assets.stop()
        if keep_tmp:
            log.error("kept %s (rustac's log) for inspection", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- catalogue I/O ------------------------------------------------------------------------------
def _read_items(stac_dir: Path) -> list[dict[str, Any]]:
    path = stac_dir / ITEMS_FILE
    if not stac_dir.is_dir():
        raise InputNotFoundError(f"{stac_dir}: STAC catalogue folder not found (expected {ITEMS_FILE} in it)")
    if not path.is_file():
        raise InputNotFoundError(f"{path}: items file not found; the catalogue folder needs {ITEMS_FILE}")
    items: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}, line {number}: not JSON ({exc})") from exc
            if not isinstance(item, dict) or item.get("type") != "Feature" or not item.get("id"):
                raise InvalidInputError(f"{path}, line {number}: expected a STAC Item (type 'Feature' with an id)")
            if not item.get("collection"):
                raise InvalidInputError(f"{path}, line {number}: item {item['id']!r} has no 'collection'")
            items.append(item)
    if not items:
        raise InvalidInputError(f"{path}: no items; a catalogue needs at least one")
    return items


def _check_collections(stac_dir: Path, items: Sequence[Mapping[str, Any]]) -> None:
    """Check the items' collections against collections.json (when there is one)."""
    path = stac_dir / COLLECTIONS_FILE
    if not path.is_file():
        log.warning("%s not found; collections are derived from the items", path)
        return
    try:
        collections = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(collections, list) or not all(isinstance(c, dict) and c.get("id") for c in collections):
        raise InvalidInputError(f"{path}: expected a JSON list of STAC Collections, each with an id")
    known = {c["id"] for c in collections}
    used = {item["collection"] for item in items}
    unknown = sorted(used - known)
    if unknown:
        raise InvalidInputError(f"{stac_dir / ITEMS_FILE}: items of collections {unknown} not listed in {path}")
    empty = sorted(known - used)
    if empty:
        log.warning("collections %s have no items and are not served (rustac derives collections from items)", empty)


def _absolute_hrefs(items: Sequence[Mapping[str, Any]], stac_dir: Path, asset_url: str) -> list[dict[str, Any]]:
    """Copies of ``items`` whose relative asset hrefs point at the asset server."""
    out: list[dict[str, Any]] = []
    missing: list[str] = []
    for item in items:
        assets: dict[str, Any] = {}
        for key, asset in (item.get("assets") or {}).items():
            href = str(asset.get("href", ""))
            if href and not urlsplit(href).scheme and not href.startswith("/"):
                relative = posixpath.normpath(href)
                if relative.startswith("../") or relative == "..":
                    raise InvalidInputError(
                        f"item {item['id']!r}, asset {key!r}: href {href!r} points outside {stac_dir}"
                    )
                if not (stac_dir / relative).is_file():
                    missing.append(relative)
                asset = {**asset, "href": f"{asset_url}/{quote(relative, safe='/')}"}
            assets[key] = asset
        out.append({**item, "assets": assets})
    if missing:
        log.warning("%d asset files are missing under %s (they will answer 404), e.g. %s", len(missing), stac_dir, missing[0])
    return out


def _write_parquet(
    command: list[str], items: list[dict[str, Any]], parquet: Path, env: Mapping[str, str], source: Path
) -> None:
    """Write ``items`` as stac-geoparquet with ``rustac translate`` (keeps rustac's logs out)."""
    ndjson = parquet.with_suffix(".ndjson")
    with atomic_path(ndjson) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item) + "\n")
    with atomic_path(parquet) as tmp:
        done = subprocess.run(
            [*command, "translate", str(ndjson), str(tmp)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise InvalidInputError(
                f"{source}: rustac could not convert the items to stac-geoparquet "
                f"({done.stderr.strip() or done.stdout.strip()})"
            )


# -- rustac -------------------------------------------------------------------------------------
def _rustac_command() -> list[str]:
    """The ``rustac`` console script of this Python environment."""
    try:
        version = importlib.metadata.version("rustac")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ServeError(
            f"rustac is not installed; install glacimap[serve] (rustac=={RUSTAC_VERSION} and "
            "rustac-duckdb-extensions)"
        ) from exc
    if version != RUSTAC_VERSION:
        log.warning("rustac %s is installed; glacimap's local server is tested with %s only", version, RUSTAC_VERSION)
    names = ("rustac.exe", "rustac") if os.name == "nt" else ("rustac",)
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return [str(folder / name)]
    found = shutil.which("rustac")
    if found:
        return [found]
    raise ServeError(f"the rustac command was not found in {[str(f) for f in folders]} nor on PATH")


def _duckdb_extension_directory() -> Path:
    """The DuckDB extensions bundled by rustac-duckdb-extensions (``v<duckdb>/<platform>/*``)."""
    try:
        import rustac_duckdb_extensions
    except ImportError as exc:
        raise ServeError(
            "rustac-duckdb-extensions is not installed; without it rustac tries to download "
            "DuckDB extensions and hangs offline. Install glacimap[serve]."
        ) from exc
    folder = Path(rustac_duckdb_extensions.extension_directory())
    if not any(folder.glob("*/*/spatial.duckdb_extension")):
        raise ServeError(f"{folder}: no spatial.duckdb_extension in a <version>/<platform> subfolder")
    return folder


def _duckdb_home(home: Path, extensions: Path) -> Path:
    """A HOME whose ``.duckdb/extensions`` is the bundled extension folder (DuckDB's default)."""
    target = home / ".duckdb" / "extensions"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(extensions, target_is_directory=True)
    except OSError:  # no symlinks (e.g. Windows without the privilege): copy (~60 MB)
        shutil.copytree(extensions, target)
    return home


def _rustac_env(home: Path) -> dict[str, str]:
    """The environment of rustac's processes: ours with HOME moved to ``home``."""
    import rustac

    env = dict(os.environ, HOME=str(home), USERPROFILE=str(home))
    # The user site-packages folder moves with HOME: keep rustac importable if it lives there.
    package_root = Path(rustac.__file__).resolve().parent.parent
    if site.ENABLE_USER_SITE and package_root == Path(site.getusersitepackages()).resolve():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), os.environ.get("PYTHONPATH")) if p)
    return env


def _start_rustac(
    command: list[str],
    parquet: Path,
    host: str,
    port: int | None,
    env: Mapping[str, str],
    log_path: Path,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``rustac serve`` and wait until it answers; return (process, API root URL)."""
    attempts_left = 1 if port is not None else _PORT_ATTEMPTS
    while True:
        attempts_left -= 1
        chosen = port if port is not None else _free_port(host)
        url = f"http://{_netloc(host, chosen)}"
        args = [*command, "serve", str(parquet), "--addr", _netloc(host, chosen), "--use-duckdb", "true"]
        log.debug("starting %s", " ".join(args))
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                args,
                cwd=parquet.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_ready(process, f"{url}/collections", timeout, log_path)
        except _AddressInUse:
            # A free port picked here can be taken before rustac binds it: pick another.
            if attempts_left == 0:
                raise ServeError(f"rustac could not listen on {url} (address in use); see {log_path}") from None
            continue
        except BaseException:
            _stop_process(process)
            raise
        return process, url


class _AddressInUse(Exception):
    pass


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    # urllib, not httpx: the serve extra does not need httpx. No proxies for a local server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            tail = _tail(log_path)
            if "address already in use" in tail.lower():
                raise _AddressInUse
            raise ServeError(f"rustac serve exited with code {code} during start-up; see {log_path}:\n{tail}")
        try:
            with opener.open(url, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, HTTP error
            pass
        if time.monotonic() > deadline:
            raise ServeError(
                f"rustac serve did not answer {url} within {timeout:.0f} s (a DuckDB extension "
                f"download hanging offline looks like this); see {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.05)


def _stop_process(process: subprocess.Popen[bytes], timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout / 2)
        except subprocess.TimeoutExpired:
            log.warning("rustac (pid %d) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait(timeout / 2)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- sockets ------------------------------------------------------------------------------------
def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {_netloc(host, port)}: {exc}") from exc
    return sock


def _free_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- command line -------------------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m glacimap.synthetic.serve STAC_DIR``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m glacimap.synthetic.serve",
        description="Serve a synthetic world's STAC catalogue (STAC API + COG assets over HTTP).",
    )
    parser.add_argument("stac_dir", type=Path, help="catalogue folder (WORLD/stac) with items.ndjson")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--stac-port", type=int, default=None, help="STAC API port (default: a free one)")
    parser.add_argument("--asset-port", type=int, default=None, help="asset server port (default: a free one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("glacimap").setLevel(logging.DEBUG)
        log.setLevel(logging.DEBUG)  # "__main__" under python -m
    # Stop cleanly on Ctrl-C and on SIGTERM, even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with serve_catalog(args.stac_dir, args.host, args.stac_port, args.asset_port) as local:
            print(f"STAC API: {local.stac_url}", flush=True)
            print(f"Assets:   {local.asset_url}", flush=True)
            print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
            while local.running():
                time.sleep(0.5)
            print(f"error: a server stopped unexpectedly; rustac's log: {local.log_path}", file=sys.stderr)
            print(_tail(local.log_path), file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except GlacimapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
