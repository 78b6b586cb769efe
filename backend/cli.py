"""The ``attrivue`` command: serve | worker | demo-data | migrate | create-user | set-password."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import signal
import subprocess
import sys
from typing import Any

from backend.core.config import SettingsError, get_settings

DEMO_NAME = "Demo: synthetic MNI152 (MS-like lesions)"
KEEP_ALIVE_SECONDS = 75  # above the 60 s idle timeout common to reverse proxies


def _fail(message: str) -> int:
    print(f"attrivue: {message}", file=sys.stderr)
    return 2


def cmd_migrate(_: argparse.Namespace) -> int:
    from backend.core.db import upgrade_database

    upgrade_database()
    print("database schema is up to date")
    return 0


def _ensure_admin() -> None:
    from backend.core.db import session_scope
    from backend.services.users import ensure_admin

    with session_scope() as session:
        created = ensure_admin(session)
        if created is not None:
            user, password = created
            print("=" * 60)
            print("  First start: created the admin user. Log in with")
            print(f"    username: {user.username}")
            print(f"    password: {password}")
            print("  This password is shown once; change it with")
            print("  `attrivue set-password admin`.")
            print("=" * 60, flush=True)


def cmd_create_user(args: argparse.Namespace) -> int:
    from backend.core.db import session_scope, upgrade_database
    from backend.services.errors import Conflict
    from backend.services.users import create_user

    upgrade_database()
    password = args.password or os.environ.get("ATTRIVUE_NEW_PASSWORD") or ""
    generated = not password
    password = password or secrets.token_urlsafe(12)
    try:
        with session_scope() as session:
            create_user(session, username=args.username, password=password, role=args.role)
    except Conflict as exc:
        return _fail(exc.detail)
    print(
        f"created {args.role} {args.username!r}"
        + (f" with password {password}" if generated else "")
    )
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from backend.core.db import session_scope, upgrade_database
    from backend.models import User
    from backend.services.users import set_password

    upgrade_database()
    password = os.environ.get("ATTRIVUE_NEW_PASSWORD") or getpass.getpass("new password: ")
    if len(password) < 10:
        return _fail("the password must have at least 10 characters")
    with session_scope() as session:
        user = session.scalar(select(User).where(User.username == args.username))
        if user is None:
            return _fail(f"no user {args.username!r}")
        revoked = set_password(session, user, password)
    print(f"password of {args.username!r} changed; {revoked} sessions and tokens revoked")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from backend.core.db import upgrade_database
    from backend.services.demo import load_demo_dataset

    upgrade_database()
    load_demo_dataset(name=DEMO_NAME, subjects=args.subjects, force=args.force)
    return 0


def _worker_argv(
    queues: str, concurrency: int, loglevel: str, name: str | None = None
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        "solo" if concurrency == 1 else "prefork",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    return argv + (["--hostname", name] if name else [])


def cmd_worker(args: argparse.Namespace) -> int:
    from backend.core.queue import QUEUES

    queues = args.queues or get_settings().worker_queues
    unknown = sorted(set(queues.split(",")) - set(QUEUES))
    if unknown:  # a worker on a misspelt queue would wait forever
        return _fail(f"unknown queue(s) {', '.join(unknown)}; the queues are {', '.join(QUEUES)}")
    argv = _worker_argv(queues, args.concurrency, args.loglevel, args.name)
    os.execv(sys.executable, argv)
    return 0  # not reached


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM when `serve` dies, however it dies (Linux only).

    uvicorn re-raises SIGTERM after its shutdown, so `serve` may end before its own cleanup.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def uvicorn_options(workers: int = 1) -> dict[str, Any]:
    """What ``attrivue serve`` passes to ``uvicorn.run`` besides the app, host and port.

    ``bench/bench_status.py`` serves its bare baseline app with the same options, so that the
    two differ in the app alone.
    """
    return {
        "factory": True,
        "workers": workers,
        "log_level": "info",
        # Keep idle connections longer than the 5 s default: a client (or a reverse proxy)
        # that reuses a connection the server has just closed gets a reset, not an answer.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # X-Forwarded-* are read by backend.api.middleware.TrustedProxies, from the proxies
        # named in ATTRIVUE_TRUSTED_PROXIES only (uvicorn would trust 127.0.0.1).
        "proxy_headers": False,
    }


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from backend.core.db import upgrade_database

    settings = get_settings()
    workers = args.workers or settings.api_workers
    if workers < 1:
        return _fail("--workers must be at least 1")
    upgrade_database()
    _ensure_admin()
    if args.demo:
        from backend.services.demo import load_demo_dataset

        load_demo_dataset(name=DEMO_NAME, subjects=16, force=False)
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            _worker_argv(settings.worker_queues, 1, "warning"), preexec_fn=_die_with_parent
        )
    host = args.host or settings.host
    port = args.port or settings.port
    print(
        f"Attrivue is starting at http://{host}:{port} with {workers} API process"
        f"{'es' if workers > 1 else ''}  (Ctrl-C stops it)",
        flush=True,
    )
    try:
        uvicorn.run("backend.main:create_app", host=host, port=port, **uvicorn_options(workers))
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attrivue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then run the API and one worker")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-worker", action="store_true", help="run the API only")
    serve.add_argument(
        "--workers",
        type=int,
        default=0,
        help="API processes (uvicorn workers); default ATTRIVUE_API_WORKERS (1)",
    )
    serve.add_argument("--demo", action="store_true", help="load the demo dataset if absent")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", help="comma-separated queues (default: gpu,cpu)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="info")
    worker.add_argument(
        "--name", help="Celery node name, e.g. gpu0@%%h (%%h: the host; default celery@%%h)"
    )
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo-data", help="generate and import the synthetic demo dataset")
    demo.add_argument("--subjects", type=int, default=16)
    demo.add_argument("--force", action="store_true", help="import again even if present")
    demo.set_defaults(func=cmd_demo_data)

    migrate = sub.add_parser("migrate", help="alembic upgrade head")
    migrate.set_defaults(func=cmd_migrate)

    create = sub.add_parser("create-user", help="add a user")
    create.add_argument("username")
    create.add_argument(
        "--role", choices=["admin", "researcher", "clinician"], default="researcher"
    )
    create.add_argument("--password", help="default: ATTRIVUE_NEW_PASSWORD or a random one")
    create.set_defaults(func=cmd_create_user)

    setpw = sub.add_parser("set-password", help="change a user's password")
    setpw.add_argument("username")
    setpw.set_defaults(func=cmd_set_password)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_settings()
        return int(args.func(args) or 0)
    except SettingsError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
