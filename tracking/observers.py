"""Sacred observers chosen by the config (`run_dir`, `mongo_url`) or by Sacred's `-m` flag.

`install(ex, commands)` gives an experiment two hooks: one checks a `-m` server before the
run exists, one attaches the observers the config asks for. A MongoDB server that cannot be
reached fails the run within seconds (pymongo would wait 30 s) with the URL and what to do.
With more than one observer, a run gets an id that neither store has used: their own
counters (the file observer's folder numbers, Mongo's _id) would otherwise collide.
"""
from __future__ import annotations

import secrets
import time

from sacred import Experiment
from sacred.observers import FileStorageObserver, MongoObserver, RunObserver


class UniqueRunId(RunObserver):
    """Names the run before any other observer sees it (highest priority)."""

    priority = 1000

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        return _id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_mongo_reachable(url: str, origin: str) -> None:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as error:
        raise ConnectionError(f"Cannot reach MongoDB at {url} ({origin}): {error}. Start the server (see "
                              "README, 'Compare runs'), or record runs with the file observer only.") from error
    finally:
        client.close()


def database_name(url: str) -> str:
    """The database a mongodb:// URL names, "sacred" when it names none."""
    import pymongo

    if url.startswith(("mongodb://", "mongodb+srv://")):
        return pymongo.uri_parser.parse_uri(url)["database"] or "sacred"
    return "sacred"


def install(ex: Experiment, commands: tuple[str, ...]) -> None:
    """Observer hooks for `ex`; only runs of `commands` are recorded."""
    mongo_flag_given = [False]
    from_config: list[RunObserver] = []

    @ex.option_hook
    def check_mongo_flag(options):
        argument = options.get("--mongo_db")
        mongo_flag_given[0] = bool(argument)
        if argument:
            from sacred.observers.mongo import parse_mongo_db_arg

            check_mongo_reachable(parse_mongo_db_arg(argument).get("url", "localhost:27017"), "the -m flag")

    @ex.config_hook
    def attach_observers(config, command_name, logger):
        # Replace, not add to, the observers of an earlier run in this process.
        for observer in from_config:
            ex.observers.remove(observer)
        from_config.clear()
        if command_name not in commands:
            return {}
        if config["mongo_url"]:
            check_mongo_reachable(config["mongo_url"], "config key `mongo_url`")
            from_config.append(MongoObserver(config["mongo_url"], db_name=database_name(config["mongo_url"])))
        if config["run_dir"]:
            from_config.append(FileStorageObserver(config["run_dir"]))
        if len(ex.observers) + len(from_config) + mongo_flag_given[0] > 1:
            from_config.append(UniqueRunId())
        ex.observers.extend(from_config)
        return {}
