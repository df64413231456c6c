"""Sacred observers chosen by the config (`run_dir`, `mongo_url`) or by Sacred's `-m` flag.

`install(ex, commands, check_config)` gives an experiment two hooks: one keeps the run's
command-line options, one checks the config and then attaches the observers it asks for. A MongoDB server that cannot be
reached fails the run within seconds (pymongo would wait 30 s) with the URL and the command
that starts the local server, or, with `mongo_fallback_to_files=True`, leaves the run to the
file observer with a warning. With more than one observer, a run gets an id that neither
store has used: their own counters (the file observer's folder numbers, Mongo's _id) would
otherwise collide.
"""
from __future__ import annotations

import secrets
import time

from sacred import Experiment
from sacred.observers import FileStorageObserver, MongoObserver, RunObserver

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
REACHABLE_WITHIN_MS = 2000  # pymongo waits 30 s by default; with start-up, a run fails within 5 s


class UniqueRunId(RunObserver):
    """Names the run before any other observer sees it (highest priority)."""

    priority = 1000

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        # An integer, as Sacred's own ids are: Omniboard reads run ids as numbers. The start time
        # (yymmddHHMMSS) and four random digits stay below 2**53, JavaScript's largest exact integer.
        return _id or int(time.strftime("%y%m%d%H%M%S")) * 10_000 + secrets.randbelow(10_000)


def mongo_error(url: str, origin: str) -> str | None:
    """Why the MongoDB server at `url` (from `origin`) does not answer within 2 s; None when it does."""
    import pymongo

    try:
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=REACHABLE_WITHIN_MS)
    except (pymongo.errors.ConfigurationError, ValueError) as error:
        raise ValueError(f"{origin}: '{url}' is not a MongoDB URL ({error}); write it like "
                         "mongodb://127.0.0.1:27017/sacred.") from error
    try:
        client.admin.command("ping")
        return None
    except pymongo.errors.PyMongoError as error:
        return str(error)
    finally:
        client.close()


def how_to_start(url: str) -> str:
    """What brings up the server `url` names: the local tracking stack for a loopback address."""
    import pymongo

    from tracking.stack import up_command_for

    host, port = pymongo.uri_parser.parse_uri(url if "://" in url else f"mongodb://{url}")["nodelist"][0]
    if host in LOOPBACK_HOSTS:
        return f"Start it with `{up_command_for(port)}` (README, 'Compare runs')"
    return f"Check that the server at {host}:{port} runs and that this machine can reach it"


def mongo_usable(url: str, origin: str, config: dict, logger) -> bool:
    """True when the server answers; False, with a warning, when the config falls back to the
    file observer; otherwise a ConnectionError naming the URL and what to do."""
    error = mongo_error(url, origin)
    if error is None:
        return True
    problem = f"Cannot reach MongoDB at {url} ({origin}): {error}."
    if config["mongo_fallback_to_files"] and config["run_dir"]:
        logger.warning("%s Recording this run with the file observer in %s only (mongo_fallback_to_files=True).",
                       problem, config["run_dir"])
        return False
    fallback = ("set run_dir as well: mongo_fallback_to_files=True needs the file observer to fall back to"
                if config["mongo_fallback_to_files"] else
                "set mongo_fallback_to_files=True to record with the file observer only")
    raise ConnectionError(f"{problem} {how_to_start(url)}, {fallback}, or leave out {origin}.")


def database_name(url: str) -> str:
    """The database a mongodb:// URL names, "sacred" when it names none."""
    import pymongo

    if url.startswith(("mongodb://", "mongodb+srv://")):
        return pymongo.uri_parser.parse_uri(url)["database"] or "sacred"
    return "sacred"


def install(ex: Experiment, commands: tuple[str, ...], check_config=None, records=None) -> None:
    """Observer hooks for `ex`; only runs of `commands` are recorded, and only where
    `records(config)` (the chief of several workers). `check_config(config, command_name)` runs
    before any observer is attached, so that a config it rejects never opens a run in any store."""
    options_of_run: list[dict] = [{}]
    from_config: list[RunObserver] = []

    @ex.option_hook
    def keep_options(options):
        options_of_run[0] = options

    @ex.config_hook
    def attach_observers(config, command_name, logger):
        # Replace, not add to, the observers of an earlier run in this process.
        for observer in from_config:
            ex.observers.remove(observer)
        from_config.clear()
        # An unreachable server fails first, within seconds (checking the config may import
        # TensorFlow); nothing is recorded before the config has passed its check.
        recorded = command_name in commands and (records is None or records(config))
        observers = _observers_for(config, logger) if recorded else []
        if check_config is not None:
            check_config(config, command_name)
        from_config.extend(observers)
        ex.observers.extend(observers)
        return {}

    def _observers_for(config, logger) -> list[RunObserver]:
        observers = []
        options = options_of_run[0]
        if options.get("--mongo_db"):
            from sacred.observers.mongo import parse_mongo_db_arg

            flag_url = parse_mongo_db_arg(options["--mongo_db"]).get("url", "localhost:27017")
            if not mongo_usable(flag_url, "the -m flag", config, logger):
                options["--mongo_db"] = None  # Sacred reads the options after this hook: no observer for -m
        if config["mongo_url"] and mongo_usable(config["mongo_url"], "config key `mongo_url`", config, logger):
            observers.append(MongoObserver(config["mongo_url"], db_name=database_name(config["mongo_url"])))
        if config["run_dir"]:
            observers.append(FileStorageObserver(config["run_dir"]))
        if len(ex.observers) + len(observers) + bool(options.get("--mongo_db")) > 1:
            observers.append(UniqueRunId())
        return observers
