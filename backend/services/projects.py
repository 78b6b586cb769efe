"""Projects, their members, and the access checks every route goes through.

Outsiders get 404 for anything inside a project, so that its existence does not leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BindParameter, Connection, Integer, ScalarSelect, bindparam, func, select
from sqlalchemy.orm import Session

from backend.core.security import hash_token
from backend.models import (
    ApiToken,
    AttributionMap,
    CohortMap,
    Dataset,
    EvidenceCheck,
    Job,
    Project,
    ProjectMember,
    Review,
    Role,
    Run,
    ShortcutReport,
    Subject,
    User,
)
from backend.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.services.users import token_is_live

__all__ = [
    "PROJECT_ROLES",
    "READ",
    "WRITE",
    "REVIEW",
    "ADMIN",
    "add_member",
    "blinded_project_ids",
    "create_project",
    "is_blinded",
    "JOB_STATUS_FIELDS",
    "job_status",
    "member_project_ids",
    "open_project_ids",
    "project_of",
    "not_found",
    "remove_member",
    "require",
    "require_job",
    "require_object",
]

PROJECT_ROLES = ("admin", "researcher", "clinician")
READ = frozenset(PROJECT_ROLES)
WRITE = frozenset({"admin", "researcher"})  # upload data, launch runs and attributions
REVIEW = frozenset(PROJECT_ROLES)  # clinicians review; so may the others
ADMIN = frozenset({"admin"})

_ACTIONS = {WRITE: "upload data or launch jobs", ADMIN: "manage the project"}


def create_project(session: Session, *, name: str, description: str, user: User) -> Project:
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists")
    project = Project(name=name, description=description, created_by_id=user.id)
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=user.id, role="admin"))
    session.flush()
    return project


def member_role(session: Session, user: User, project_id: int) -> str | None:
    return session.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user.id
        )
    )


def member_project_ids(session: Session, user: User) -> list[int]:
    rows = session.scalars(select(ProjectMember.project_id).where(ProjectMember.user_id == user.id))
    return list(rows)


def blinded_project_ids(session: Session, user: User) -> set[int]:
    """The projects where ``user`` is a blinded reviewer: a clinician, and the project's review
    round is blinded. There they see no run, no method and no id that leads to one."""
    rows = session.scalars(
        select(ProjectMember.project_id)
        .join(Project, Project.id == ProjectMember.project_id)
        .where(
            ProjectMember.user_id == user.id,
            ProjectMember.role == "clinician",
            Project.review_blinded.is_(True),
        )
    )
    return set(rows)


def is_blinded(session: Session, user: User, project_id: int) -> bool:
    """Whether ``user`` reviews blinded in the project."""
    return project_id in blinded_project_ids(session, user)


def open_project_ids(session: Session, user: User) -> list[int]:
    """The user's projects whose runs, maps and jobs they may see (not blinded there)."""
    blinded = blinded_project_ids(session, user)
    return [p for p in member_project_ids(session, user) if p not in blinded]


# What a blinded reviewer may not see: each of these names the run, or leads to it.
_BLINDED_KINDS = (Run, AttributionMap, Job)


def require(session: Session, user: User, project_id: int, roles: Iterable[str] = READ) -> str:
    """The user's role in the project, or an error: 404 for outsiders, 403 for a weak role."""
    return _checked_role(user.role, project_id, member_role(session, user, project_id), roles)


def _checked_role(user_role: str, project_id: int, role: str | None, roles: Iterable[str]) -> str:
    """``require``'s decision, given the user's site role and role in the project (None: not a
    member)."""
    allowed = frozenset(roles)
    if (role is None or role not in allowed) and user_role == Role.admin.value:
        if allowed == ADMIN:
            return "site-admin"  # site admins manage every project's members (audited)
    if role is None:
        raise NotFound(f"project {project_id} not found")
    if role not in allowed:
        action = _ACTIONS.get(allowed, "do this")
        raise Forbidden(f"your role in this project ({role}) may not {action}")
    return role


_NOUNS = {
    "Dataset": "dataset",
    "Subject": "subject",
    "Run": "run",
    "AttributionMap": "attribution",
    "Review": "review",
    "Job": "job",
}


def not_found(obj: object) -> NotFound:
    """The error a request gets for an id that does not exist, for this object's kind.

    Objects of projects the user is not in answer exactly this, so that a 404 does not tell
    "exists elsewhere" from "does not exist".
    """
    noun = _NOUNS.get(type(obj).__name__, type(obj).__name__.lower())
    return NotFound(f"{noun} {getattr(obj, 'id', '?')} not found")


def require_object(session: Session, user: User, obj: object, roles: Iterable[str] = READ) -> str:
    """``require`` on the project of ``obj``; outsiders get the object's own not-found error.

    So do blinded reviewers asking for a run, a map or a job of their blinded project.
    """
    project_id = project_of(session, obj)
    try:
        role = require(session, user, project_id, roles)
    except NotFound:
        raise not_found(obj) from None
    if isinstance(obj, _BLINDED_KINDS) and is_blinded(session, user, project_id):
        raise not_found(obj)
    return role


def project_of(session: Session, obj: object) -> int:
    """The project a dataset, subject, run, attribution, review or job belongs to."""
    if isinstance(obj, Dataset):
        return obj.project_id
    if isinstance(obj, Subject | Run):
        dataset = session.get(Dataset, obj.dataset_id)
        assert dataset is not None
        return dataset.project_id
    if isinstance(obj, AttributionMap):
        run = session.get(Run, obj.run_id)
        assert run is not None
        return project_of(session, run)
    if isinstance(obj, EvidenceCheck):
        run = session.get(Run, obj.run_id)
        assert run is not None
        return project_of(session, run)
    if isinstance(obj, Review):
        attribution = session.get(AttributionMap, obj.attribution_id)
        assert attribution is not None
        return project_of(session, attribution)
    if isinstance(obj, Job):
        project_id = session.scalar(select(_job_project_id(obj.id)))
        if project_id is None:
            raise NotFound(f"job {obj.id} not found")
        return int(project_id)
    raise TypeError(f"no project for {type(obj).__name__}")


def _job_project_id(job_id: int | BindParameter[int]) -> ScalarSelect[int]:
    """SQL for the project of a job: that of its run, or of the run of its attribution map,
    evidence check, shortcut report (issue 18) or cohort map, the first found in that order;
    NULL for a job of none."""
    run_id = func.coalesce(
        *(
            select(column).where(owner.job_id == job_id).limit(1).scalar_subquery()
            for owner, column in (
                (Run, Run.id),
                (AttributionMap, AttributionMap.run_id),
                (EvidenceCheck, EvidenceCheck.run_id),
                (ShortcutReport, ShortcutReport.run_id),
                (CohortMap, CohortMap.run_id),
            )
        )
    )
    return (
        select(Dataset.project_id)
        .join(Run, Run.dataset_id == Dataset.id)
        .where(Run.id == run_id)
        .scalar_subquery()
    )


# The job, its project, the user's role there and the project's blinding, in one query; made
# once (building a statement this size costs more than running it), with its parameters bound
# at each execution.
_JOB_ACCESS = (
    select(Job, Project.id, ProjectMember.role, Project.review_blinded)
    .select_from(Job)
    .outerjoin(Project, Project.id == _job_project_id(bindparam("job_id", type_=Integer)))
    .outerjoin(
        ProjectMember,
        (ProjectMember.project_id == Project.id)
        & (ProjectMember.user_id == bindparam("user_id", type_=Integer)),
    )
    .where(Job.id == bindparam("job_id", type_=Integer))
)


def require_job(session: Session, user: User, job_id: int, roles: Iterable[str] = READ) -> Job:
    """The job, if ``user`` may see it: ``require_object`` on it, in one query.

    The job, its project, the user's role there and whether the project's review is blinded
    come back together; the decision is ``require``'s and ``require_object``'s (404 for a job
    that does not exist, of no project, of a project the user is not in, or that they review
    blinded; 403 for a role not in ``roles``). Nothing is cached: a membership removed or a
    blinding switched on applies to the next request.
    """
    row = session.execute(_JOB_ACCESS, {"job_id": job_id, "user_id": user.id}).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    job, found_project, role, blinded = row
    _check_job_access(job_id, user.role, found_project, role, blinded, roles)
    return job


def _check_job_access(
    job_id: int,
    user_role: str,
    project_id: int | None,
    role: str | None,
    blinded: bool | None,
    roles: Iterable[str],
) -> None:
    """``require_object``'s decision on a job, given its project (None: of none), the user's
    site role, their role there (None: not a member) and the project's blinding."""
    if project_id is None:
        raise NotFound(f"job {job_id} not found")
    try:
        role = _checked_role(user_role, project_id, role, roles)
    except NotFound:
        raise NotFound(f"job {job_id} not found") from None
    if role == "clinician" and blinded:  # is_blinded: a clinician, and the review is blinded
        raise NotFound(f"job {job_id} not found")


# The columns of a job as getJob answers them (JobPublic's fields).
JOB_STATUS_FIELDS = (
    "id",
    "kind",
    "status",
    "progress",
    "message",
    "error",
    "attempts",
    "cancel_requested",
    "worker",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
)

# getJob in one query, on Core rows (no ORM objects): the token's columns and its user's, the
# job's columns, its project, the user's role there and the project's blinding. No row: the
# token is unknown. The job's columns are NULL when it does not exist. Made once.
_JOB_STATUS = (
    select(
        ApiToken.revoked_at,
        ApiToken.expires_at,
        User.role.label("user_role"),
        User.is_active,
        Project.id.label("project_id"),
        ProjectMember.role.label("member_role"),
        Project.review_blinded,
        *(getattr(Job, name).label(f"job_{name}") for name in JOB_STATUS_FIELDS),
    )
    .select_from(ApiToken)
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(Job, Job.id == bindparam("job_id", type_=Integer))
    .outerjoin(Project, Project.id == _job_project_id(bindparam("job_id", type_=Integer)))
    .outerjoin(
        ProjectMember,
        (ProjectMember.project_id == Project.id) & (ProjectMember.user_id == User.id),
    )
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def job_status(connection: Connection, token: str, job_id: int) -> dict[str, Any] | None:
    """getJob's answer for the holder of a token: the job's fields (``JOB_STATUS_FIELDS``) if
    they may see it, None if the token does not authenticate (unknown, revoked, expired, or
    its user inactive), else NotFound or Forbidden as ``require_job`` decides.

    One query, token and access together, nothing cached: a logout, a membership removed or
    a blinding switched on applies to the next request.
    """
    found = connection.execute(_JOB_STATUS, {"token_hash": hash_token(token), "job_id": job_id})
    row = found.first()
    if row is None or not token_is_live(row.revoked_at, row.expires_at, row.is_active):
        return None
    if row.job_id is None:
        raise NotFound(f"job {job_id} not found")
    _check_job_access(
        job_id, row.user_role, row.project_id, row.member_role, row.review_blinded, READ
    )
    values = row._mapping
    return {name: values[f"job_{name}"] for name in JOB_STATUS_FIELDS}


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def _admin_count(session: Session, project_id: int) -> int:
    return len(
        session.scalars(
            select(ProjectMember.id).where(
                ProjectMember.project_id == project_id, ProjectMember.role == "admin"
            )
        ).all()
    )


def add_member(
    session: Session, *, project: Project, username: str, role: str
) -> tuple[ProjectMember, str | None]:
    """Add ``username`` to the project or change their role; returns it and the old role.

    The project's last admin cannot be demoted (a project keeps at least one admin).
    """
    if role not in PROJECT_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(PROJECT_ROLES)}")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} not found")
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    )
    old_role = member.role if member is not None else None
    if member is None:
        member = ProjectMember(project_id=project.id, user_id=user.id, role=role)
        session.add(member)
    else:
        if old_role == "admin" and role != "admin" and _admin_count(session, project.id) == 1:
            raise Conflict("a project keeps at least one admin: make another member admin first")
        member.role = role
    session.flush()
    return member, old_role


def remove_member(session: Session, *, project: Project, user_id: int) -> ProjectMember:
    """Remove a member (not the last admin); returns the removed membership."""
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user_id
        )
    )
    if member is None:
        raise NotFound(f"user {user_id} is not a member of project {project.id}")
    if member.role == "admin" and _admin_count(session, project.id) == 1:
        raise Conflict("a project keeps at least one admin")
    session.delete(member)
    session.flush()
    return member
