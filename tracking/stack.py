"""The tracking stack on 127.0.0.1: a MongoDB-wire server (SecantusDB), Omniboard and TensorBoard.

    python -m tracking install   # only installs (up does it first): tracking/requirements.txt, Omniboard
    python -m tracking up        # installs on first use, starts what is not running, prints the URLs
    python -m tracking status    # which of the three run
    python -m tracking down      # stops the processes `up` started

The database keeps its files in `<state folder>/db` (default `.tracking/db` in the project), so
recorded runs survive restarts. `<state folder>/servers.json` records each started process
(pid and start time): `down` stops exactly those, never another process that reuses a pid.
Omniboard is installed from npm at the version `tracking/package-lock.json` pins, into
`.cache/tracking/omniboard`, never globally; the Python servers come from `tracking/requirements.txt`.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from Datasets.atomic import atomic_open

TRACKING_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(TRACKING_DIR)
INSTALL_DIR = os.path.join(PROJECT_DIR, ".cache", "tracking")
DEFAULT_STATE_DIR = os.path.join(PROJECT_DIR, ".tracking")
HOST = "127.0.0.1"
DATABASE = "sacred"
DEFAULT_PORTS = {"mongo": 27017, "omniboard": 9000, "tensorboard": 6006}
SERVER_ORDER = ("mongo", "omniboard", "tensorboard")  # Omniboard needs the database
TITLES = {"mongo": "MongoDB", "omniboard": "Omniboard", "tensorboard": "TensorBoard"}
START_TIMEOUT_S = 90.0  # Omniboard's first start on a cold disk reads ~800 npm packages
STOP_TIMEOUT_S = 15.0  # then the process is killed
UP_COMMAND = "python -m tracking up"

# Shown in Omniboard's run table from the first start: the metrics Training.py logs per epoch,
# and the test medians of its result with the number of songs behind each and how many failed.
# Added only where the database has no column of that name.
OMNIBOARD_METRIC_COLUMNS = (
    {"name": "best_supervised_validation_loss", "metric_name": "supervised.validation_loss", "extrema": "min"},
    {"name": "best_semi_supervised_validation_loss", "metric_name": "semi_supervised.validation_loss",
     "extrema": "min"},
)
OMNIBOARD_CUSTOM_COLUMNS = tuple(
    {"name": f"{phase}_{source}_{column}", "config_path": f"result.{phase}.{source}_{key}"}
    for phase in ("supervised", "semi_supervised")
    for source in ("voice", "accompaniment", "vocals", "drums", "bass", "other")  # the paper's and four_stems
    for column, key in (("SDR", "median_SDR"), ("songs", "count_SDR"), ("failed", "failed")))


class StackError(RuntimeError):
    """A server of the stack cannot be installed, started or reached; the message says what to do."""


def mongo_url(port: int) -> str:
    return f"mongodb://{HOST}:{port}/{DATABASE}"


def up_command_for(port: int) -> str:
    """The command that serves MongoDB on `port`."""
    return UP_COMMAND if port == DEFAULT_PORTS["mongo"] else f"{UP_COMMAND} --mongo-port {port}"


def install_python_requirements() -> None:
    """pip-installs tracking/requirements.txt into this interpreter unless its pins are met."""
    from importlib import metadata

    from packaging.requirements import Requirement

    path = os.path.join(TRACKING_DIR, "requirements.txt")
    with open(path) as handle:
        requirements = [Requirement(line.split("#")[0]) for line in handle if line.split("#")[0].strip()]
    try:
        if all(metadata.version(requirement.name) in requirement.specifier for requirement in requirements):
            return
    except metadata.PackageNotFoundError:
        pass
    print(f"Installing {path} into {sys.prefix} ...", flush=True)
    completed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                "-r", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if completed.returncode:
        raise StackError(f"pip could not install {path}:\n{completed.stdout[-3000:]}")


def install_omniboard() -> str:
    """Omniboard's start script, installed with `npm ci` from tracking/package-lock.json when the
    install folder does not hold exactly that lock."""
    folder = os.path.join(INSTALL_DIR, "omniboard")
    executable = os.path.join(folder, "node_modules", ".bin", "omniboard")
    lock = os.path.join(TRACKING_DIR, "package-lock.json")
    installed_lock = os.path.join(folder, "package-lock.json")
    if os.path.exists(executable) and os.path.exists(installed_lock) and filecmp.cmp(lock, installed_lock,
                                                                                    shallow=False):
        return executable
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise StackError("Omniboard needs Node.js and npm, which are not on PATH: install them "
                         "(Debian: apt-get install -y nodejs npm) and run `python -m tracking up` again.")
    print(f"Installing Omniboard (npm ci, about a minute) into {folder} ...", flush=True)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(TRACKING_DIR, "package.json"), os.path.join(folder, "package.json"))
    shutil.copyfile(lock, installed_lock)
    completed = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if completed.returncode or not os.path.exists(executable):
        os.unlink(installed_lock)  # so that the next `up` installs again
        raise StackError(f"npm ci in {folder} failed:\n{completed.stdout[-3000:]}")
    return executable


def check_port_free(port: int, title: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: connections of a stopped server lingering in TIME_WAIT do not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise StackError(f"Port {port} on {HOST} is busy ({error.strerror}), so {title} cannot start there. "
                             f"Stop what listens on it, or choose another port: {UP_COMMAND} {option} N") from error


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _mongo_ok(url: str) -> bool:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


@dataclass
class Server:
    """One server to start: its command line and how to tell that it serves."""

    name: str
    port: int
    command: list[str]
    url: str
    ready_check: str  # the URL that answers once the server serves
    serves: str  # its data: the database folder, the database URL, the TensorBoard log folder
    environment: dict[str, str] = field(default_factory=dict)

    def ready(self) -> bool:
        return _mongo_ok(self.ready_check) if self.name == "mongo" else _http_ok(self.ready_check)


class TrackingStack:
    """The three servers of one state folder (database files, server logs, servers.json)."""

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR):
        self.state_dir = os.path.abspath(state_dir)
        self.state_file = os.path.join(self.state_dir, "servers.json")
        self.database_dir = os.path.join(self.state_dir, "db")

    def _recorded(self) -> dict[str, dict]:
        if not os.path.exists(self.state_file):
            return {}
        with open(self.state_file) as handle:
            return json.load(handle)

    def _save(self, entries: dict[str, dict]) -> None:
        if entries:
            with atomic_open(self.state_file, "w") as handle:
                json.dump(entries, handle, indent=2)
        elif os.path.exists(self.state_file):
            os.unlink(self.state_file)

    @staticmethod
    def _process(entry: dict):
        """The recorded process if it still runs; a pid taken over by another process is not it."""
        import psutil

        try:
            process = psutil.Process(entry["pid"])
            if process.create_time() == entry["create_time"] and process.is_running():
                return process
        except psutil.NoSuchProcess:
            pass
        return None

    def status(self) -> dict[str, dict | None]:
        """Each server's record while its process runs, None otherwise."""
        recorded = self._recorded()
        return {name: recorded[name] if name in recorded and self._process(recorded[name]) else None
                for name in SERVER_ORDER}

    def _servers(self, ports: dict[str, int], log_dir: str, omniboard: str) -> dict[str, Server]:
        mongo, omniboard_port, tensorboard = ports["mongo"], ports["omniboard"], ports["tensorboard"]
        secantus = os.path.join(os.path.dirname(sys.executable), "secantusd-py")
        return {
            "mongo": Server("mongo", mongo, [secantus, "--host", HOST, "--port", str(mongo), "--storage-path",
                                             self.database_dir], mongo_url(mongo), mongo_url(mongo),
                            self.database_dir),
            "omniboard": Server("omniboard", omniboard_port, [omniboard, "-m", f"{HOST}:{mongo}:{DATABASE}"],
                                f"http://{HOST}:{omniboard_port}/{DATABASE}",
                                f"http://{HOST}:{omniboard_port}/{DATABASE}/api/v1/Runs/count", mongo_url(mongo),
                                {"PORT": str(omniboard_port)}),
            "tensorboard": Server("tensorboard", tensorboard,
                                  [sys.executable, "-m", "tensorboard.main", "--logdir", log_dir, "--host", HOST,
                                   "--port", str(tensorboard)],
                                  f"http://{HOST}:{tensorboard}", f"http://{HOST}:{tensorboard}/data/logdir", log_dir),
        }

    def _start(self, server: Server) -> dict:
        import psutil

        log_path = os.path.join(self.state_dir, "logs", f"{server.name}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "ab") as log:
            # A session of its own: the server outlives this command and Ctrl-C in its terminal.
            process = subprocess.Popen(server.command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env={**os.environ, **server.environment},
                                       cwd=self.state_dir, start_new_session=True)
        entry = {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(),
                 "port": server.port, "url": server.url, "serves": server.serves, "command": server.command,
                 "log": log_path}
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                reason = (f"exited with code {process.returncode}" if process.poll() is not None
                          else f"did not answer at {server.ready_check} within {START_TIMEOUT_S:.0f} s")
                self._stop([entry])
                with open(log_path, errors="replace") as handle:
                    tail = handle.read()[-2000:]
                raise StackError(f"{TITLES[server.name]} {reason}; its log {log_path} ends with:\n{tail}")
            time.sleep(0.2)
        return entry

    def _stop(self, entries: list[dict]) -> list[bool]:
        """Stops the recorded processes and their children, all at once; per entry, whether it ran."""
        import psutil

        found = [self._process(entry) for entry in entries]
        processes = [member for process in found if process
                     for member in (*process.children(recursive=True), process)]
        for member in processes:
            try:
                member.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
        for member in alive:
            member.kill()
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
        return [process is not None for process in found]

    def up(self, mongo_port: int | None = None, omniboard_port: int | None = None,
           tensorboard_port: int | None = None, log_dir: str | None = None) -> dict[str, dict]:
        """Installs what is missing and starts the servers that do not run; returns every server's record.

        A port (or log folder) left as None is the running server's, else the default; asking a
        running server for another one is an error, as `down` must come first."""
        install_python_requirements()
        omniboard = install_omniboard()
        running = {name: entry for name, entry in self.status().items() if entry}
        requested = {"mongo": mongo_port, "omniboard": omniboard_port, "tensorboard": tensorboard_port}
        for name, port in requested.items():
            if name in running and port not in (None, running[name]["port"]):
                raise StackError(f"{TITLES[name]} already runs on port {running[name]['port']} (pid "
                                 f"{running[name]['pid']}): `python -m tracking down` first to move it to {port}.")
        if log_dir is not None and "tensorboard" in running and \
                os.path.abspath(log_dir) != running["tensorboard"]["serves"]:
            raise StackError(f"TensorBoard already serves {running['tensorboard']['serves']}: `python -m "
                             f"tracking down` first to serve {os.path.abspath(log_dir)}.")
        ports = {name: running[name]["port"] if name in running else port or DEFAULT_PORTS[name]
                 for name, port in requested.items()}
        log_dir = running["tensorboard"]["serves"] if "tensorboard" in running else os.path.abspath(log_dir or "logs")
        servers = self._servers(ports, log_dir, omniboard)
        os.makedirs(self.database_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)
        started = []
        try:
            for name in SERVER_ORDER:
                if name in running:
                    continue
                check_port_free(servers[name].port, TITLES[name], f"--{name}-port")
                running[name] = self._start(servers[name])
                started.append(name)
                self._save(running)
                if name == "omniboard":
                    add_omniboard_columns(servers[name].url)
        except BaseException:
            self._stop([running.pop(name) for name in started])  # leave nothing half-started behind
            self._save(running)
            raise
        return running

    def down(self) -> dict[str, bool]:
        """Stops every recorded server; returns, per server, whether it was running."""
        recorded = self._recorded()
        stopped = dict(zip(recorded, self._stop(list(recorded.values()))))
        self._save({})
        return stopped


def add_omniboard_columns(omniboard_url: str) -> None:
    """Adds the default metric and result columns through Omniboard's API, keeping any the user has."""
    for collection, columns in (("Omniboard.Metric.Columns", OMNIBOARD_METRIC_COLUMNS),
                                ("Omniboard.Custom.Columns", OMNIBOARD_CUSTOM_COLUMNS)):
        endpoint = f"{omniboard_url}/api/v1/{collection}"
        with urllib.request.urlopen(endpoint, timeout=10) as response:
            existing = {column["name"] for column in json.load(response)}
        for column in columns:
            if column["name"] not in existing:
                request = urllib.request.Request(endpoint, data=json.dumps(column).encode(), method="POST",
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=10).close()
