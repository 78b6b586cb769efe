"""``attrivue-client``: upload, train, follow, attribute, fetch, export and import models
from a shell.

Ids go to stdout (one per line) so that commands chain in scripts; progress bars and messages
go to stderr. Exit status: 0 done, 1 the API refused or could not be reached, 2 bad usage,
3 a followed job failed or was cancelled.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from attrivue_client.client import (
    ApiError,
    Client,
    Record,
    load_config,
    read_manifest,
    save_token,
    token_path,
)

__all__ = ["main"]

EXIT_API = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _params(value: str | None) -> dict[str, Any]:
    """Method parameters: inline JSON, or a JSON/YAML file."""
    if not value:
        return {}
    loaded = json.loads(value) if value.lstrip().startswith("{") else load_config(value)
    if not isinstance(loaded, dict):
        raise ValueError("--params must be a JSON object or a file holding one")
    return loaded


def _report(jobs: Sequence[Record]) -> int:
    failed = [j for j in jobs if j["status"] != "succeeded"]
    for job in failed:
        _say(f"job {job['id']} {job['status']}: {job.get('error') or job.get('message') or ''}")
    _say(f"{len(jobs) - len(failed)} of {len(jobs)} jobs succeeded")
    return EXIT_JOB_FAILED if failed else 0


# --------------------------------------------------------------------------- commands


def cmd_login(api: Client, args: argparse.Namespace) -> int:
    username = args.username or os.environ.get("ATTRIVUE_USERNAME") or input("username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("ATTRIVUE_PASSWORD") or getpass.getpass("password: ")
    token = api.login(username, password)
    if args.personal:
        token = api.create_token(args.personal, expires_in_days=args.days)
        api.logout()  # the session token was only needed to create the personal one
    if args.print:
        print(token)
    else:
        _say(f"logged in as {username}; token stored in {save_token(token, args.token_file)}")
    return 0


def cmd_list(api: Client, args: argparse.Namespace) -> int:
    listings = {
        "projects": lambda: api.projects(),
        "datasets": lambda: api.datasets(project_id=args.project),
        "subjects": lambda: api.subjects(_required(args.dataset, "--dataset")),
        "runs": lambda: api.runs(dataset_id=args.dataset, status=args.status),
        "jobs": lambda: api.jobs(status=args.status),
        "attributions": lambda: api.attributions(
            run_id=args.run, status=args.status, method=args.method, split=args.split
        ),
    }
    print(json.dumps(listings[args.what](), indent=2))
    return 0


def _required(value: int | None, flag: str) -> int:
    if value is None:
        raise ValueError(f"{flag} is required here")
    return value


def cmd_project(api: Client, args: argparse.Namespace) -> int:
    found = [p for p in api.projects() if p["name"] == args.name]
    if found:
        project = found[0]
    else:
        project = api.create_project(args.name, description=args.description)
        _say(f"created project {project['id']} ({project['name']})")
    print(project["id"])
    return 0


def cmd_upload(api: Client, args: argparse.Namespace) -> int:
    read_manifest(args.folder)  # a bad manifest stops here, before a dataset is created
    if args.dataset is None:
        dataset = api.create_dataset(args.name, project_id=args.project)
        _say(f"created dataset {dataset['id']} ({dataset['name']})")
        dataset_id = int(dataset["id"])
    else:
        dataset_id = args.dataset
    uploaded = api.upload_folder(dataset_id, args.folder, skip_existing=not args.no_skip)
    _say(f"uploaded {len(uploaded)} subjects to dataset {dataset_id}")
    print(dataset_id)
    return 0


def cmd_train(api: Client, args: argparse.Namespace) -> int:
    run = api.create_run(args.dataset, args.name, args.config)
    _say(f"run {run['id']} queued as job {run['job_id']}")
    print(run["id"])
    if not args.follow:
        return 0
    return _report([api.follow(run["job_id"], interval=args.interval)])


def cmd_follow(api: Client, args: argparse.Namespace) -> int:
    job_ids = list(args.job_ids)
    if args.run is not None:
        job_ids.append(api.run(args.run)["job_id"])
    if not job_ids:
        raise ValueError("name at least one job id, or --run")
    if len(job_ids) == 1:
        jobs = [api.follow(job_ids[0], interval=args.interval, timeout=args.timeout)]
    else:
        jobs = api.follow_all(job_ids, interval=args.interval, timeout=args.timeout)
    return _report(jobs)


def cmd_attribute(api: Client, args: argparse.Namespace) -> int:
    maps = api.attribute(
        args.run,
        subject_ids=args.subjects,
        split=args.split,
        method=args.method,
        params=_params(args.params),
    )
    _say(f"{len(maps)} {args.method} maps queued for run {args.run}")
    for row in maps:
        print(row["job_id"])
    if not args.follow:
        return 0
    return _report(api.follow_all([m["job_id"] for m in maps], interval=args.interval))


def cmd_fetch(api: Client, args: argparse.Namespace) -> int:
    paths = api.fetch_maps(
        args.run, args.out_dir, method=args.method, split=args.split, display=args.display
    )
    _say(f"{len(paths)} maps in {args.out_dir} (index: maps.csv)")
    for path in paths:
        print(path)
    return 0


def cmd_stats(api: Client, args: argparse.Namespace) -> int:
    print(json.dumps(api.stats(args.attribution_id), indent=2))
    return 0


def cmd_export(api: Client, args: argparse.Namespace) -> int:
    path = api.export_run(args.run, args.output, checkpoint=args.checkpoint)
    _say(f"run {args.run}: {'checkpoint' if args.checkpoint else 'MONAI bundle'} saved")
    print(path)
    return 0


def cmd_import_model(api: Client, args: argparse.Namespace) -> int:
    run = api.import_model(
        args.dataset,
        args.model,
        name=args.name,
        grid=args.grid,
        channels=args.channels,
        intensity=args.intensity,
        brain=args.brain,
        logit_index=args.logit_index,
        task=args.task,
    )
    _say(f"imported as run {run['id']} ({run['model_format']})")
    print(run["id"])
    return 0


# --------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attrivue-client", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="the server (default $ATTRIVUE_URL or 127.0.0.1:8000)")
    parser.add_argument("--token", help="bearer token (default $ATTRIVUE_TOKEN or the login file)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="log in and store the token")
    login.add_argument("--username", help="default $ATTRIVUE_USERNAME, else asked")
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (default $ATTRIVUE_PASSWORD, else asked)",
    )
    login.add_argument("--print", action="store_true", help="print the token, store nothing")
    login.add_argument("--personal", metavar="NAME", help="store a personal API token instead")
    login.add_argument("--days", type=int, default=90, help="lifetime of --personal (days)")
    login.add_argument("--token-file", type=Path, default=None, help=f"default {token_path()}")
    login.set_defaults(handler=cmd_login)

    listing = commands.add_parser("list", help="print a listing as JSON")
    listing.add_argument(
        "what", choices=["projects", "datasets", "subjects", "runs", "jobs", "attributions"]
    )
    listing.add_argument("--project", type=int)
    listing.add_argument("--dataset", type=int)
    listing.add_argument("--run", type=int)
    listing.add_argument("--status")
    listing.add_argument("--method")
    listing.add_argument("--split", choices=["train", "val", "test"])
    listing.set_defaults(handler=cmd_list)

    project = commands.add_parser("project", help="print a project's id, creating it if needed")
    project.add_argument("name")
    project.add_argument("--description", default="")
    project.set_defaults(handler=cmd_project)

    upload = commands.add_parser("upload", help="upload a folder with manifest.csv")
    upload.add_argument("folder", type=Path)
    target = upload.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", type=int, help="an existing dataset")
    target.add_argument("--name", help="create a dataset of this name")
    upload.add_argument("--project", type=int, help="project of the new dataset")
    upload.add_argument("--no-skip", action="store_true", help="re-upload existing subjects")
    upload.set_defaults(handler=cmd_upload)

    train = commands.add_parser("train", help="queue a training run; prints its id")
    train.add_argument("--dataset", type=int, required=True)
    train.add_argument("--name", required=True)
    train.add_argument("--config", type=Path, help="RunConfig as YAML or JSON")
    train.add_argument("--follow", action="store_true", help="wait for the run to end")
    train.add_argument("--interval", type=float, default=1.0)
    train.set_defaults(handler=cmd_train)

    follow = commands.add_parser("follow", help="wait for jobs to end")
    follow.add_argument("job_ids", type=int, nargs="*", metavar="JOB_ID")
    follow.add_argument("--run", type=int, help="follow this run's training job")
    follow.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    follow.add_argument("--timeout", type=float, help="give up after this many seconds")
    follow.set_defaults(handler=cmd_follow)

    attribute = commands.add_parser("attribute", help="queue maps; prints their job ids")
    attribute.add_argument("--run", type=int, required=True)
    chosen = attribute.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--subjects", type=int, nargs="+", metavar="SUBJECT_ID")
    chosen.add_argument("--split", choices=["train", "val", "test"])
    attribute.add_argument("--method", default="integrated_gradients")
    attribute.add_argument("--params", help="JSON ('{\"steps\": 32}') or a JSON/YAML file")
    attribute.add_argument("--follow", action="store_true", help="wait for the maps")
    attribute.add_argument("--interval", type=float, default=1.0)
    attribute.set_defaults(handler=cmd_attribute)

    fetch = commands.add_parser("fetch", help="download a run's computed maps")
    fetch.add_argument("--run", type=int, required=True)
    fetch.add_argument("out_dir", type=Path)
    fetch.add_argument("--method")
    fetch.add_argument("--split", choices=["train", "val", "test"])
    fetch.add_argument("--display", action="store_true", help="the int8 display maps")
    fetch.set_defaults(handler=cmd_fetch)

    export = commands.add_parser(
        "export", help="download a run as a MONAI bundle (zip), or its best checkpoint"
    )
    export.add_argument("run", type=int, metavar="RUN")
    export.add_argument("--checkpoint", action="store_true", help="the best checkpoint only")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    export.set_defaults(handler=cmd_export)

    imported = commands.add_parser(
        "import-model",
        help="import a TorchScript file or a MONAI bundle (zip or folder) as a run; prints its id",
    )
    imported.add_argument("model", type=Path, metavar="FILE")
    imported.add_argument("--dataset", type=int, required=True)
    imported.add_argument("--name", required=True)
    imported.add_argument(
        "--grid", type=int, nargs=3, required=True, metavar=("X", "Y", "Z"), help="working grid"
    )
    imported.add_argument("--channels", type=int, default=1)
    imported.add_argument("--intensity", choices=["zscore", "percentile"], default="zscore")
    imported.add_argument("--brain", choices=["mask", "nonzero"], default="mask")
    imported.add_argument(
        "--logit-index",
        type=int,
        default=0,
        help="output index of the pathological logit (or of the regression prediction)",
    )
    imported.add_argument(
        "--task",
        choices=["classification", "regression"],
        default="classification",
        help="regression: the output at --logit-index is the predicted target, not a logit",
    )
    imported.set_defaults(handler=cmd_import_model)

    stats = commands.add_parser("stats", help="print a map's statistics as JSON")
    stats.add_argument("attribution_id", type=int)
    stats.set_defaults(handler=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    token = args.token if args.command != "login" else None
    try:
        with Client(args.url, token, progress=not args.no_progress) as api:
            if args.command == "login":
                api.token = None
            return int(args.handler(api, args))
    except (ValueError, yaml.YAMLError) as exc:  # bad input: a manifest, a config, --params
        _say(f"error: {exc}")
        return EXIT_USAGE
    except (ApiError, OSError) as exc:  # OSError: files, and TimeoutError of --timeout
        _say(f"error: {exc}")
        return EXIT_API
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
