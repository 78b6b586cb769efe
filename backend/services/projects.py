"""Projects, their members, and the access checks every route goes through.

Outsiders get 404 for anything inside a project, so that its existence does not leak.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import (
    AttributionMap,
    Dataset,
    Job,
    Project,
    ProjectMember,
    Review,
    Role,
    Run,
    Subject,
    User,
)
from backend.services.errors import Conflict, Forbidden, InvalidInput, NotFound

__all__ = [
    "PROJECT_ROLES",
    "READ",
    "WRITE",
    "REVIEW",
    "ADMIN",
    "add_member",
    "create_project",
    "member_project_ids",
    "project_of",
    "remove_member",
    "require",
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


def require(session: Session, user: User, project_id: int, roles: Iterable[str] = READ) -> str:
    """The user's role in the project, or an error: 404 for outsiders, 403 for a weak role."""
    role = member_role(session, user, project_id)
    if role is None:
        if user.role == Role.admin.value and frozenset(roles) == ADMIN:
            return "site-admin"  # site admins manage every project's members
        raise NotFound(f"project {project_id} not found")
    allowed = frozenset(roles)
    if role not in allowed:
        action = _ACTIONS.get(allowed, "do this")
        raise Forbidden(f"your role in this project ({role}) may not {action}")
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
    if isinstance(obj, Review):
        attribution = session.get(AttributionMap, obj.attribution_id)
        assert attribution is not None
        return project_of(session, attribution)
    if isinstance(obj, Job):
        run = session.scalar(select(Run).where(Run.job_id == obj.id))
        if run is not None:
            return project_of(session, run)
        attribution = session.scalar(select(AttributionMap).where(AttributionMap.job_id == obj.id))
        if attribution is not None:
            return project_of(session, attribution)
        raise NotFound(f"job {obj.id} not found")
    raise TypeError(f"no project for {type(obj).__name__}")


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def add_member(session: Session, *, project: Project, username: str, role: str) -> ProjectMember:
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
    if member is None:
        member = ProjectMember(project_id=project.id, user_id=user.id, role=role)
        session.add(member)
    else:
        member.role = role
    session.flush()
    return member


def remove_member(session: Session, *, project: Project, user_id: int) -> None:
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user_id
        )
    )
    if member is None:
        raise NotFound(f"user {user_id} is not a member of project {project.id}")
    admins = session.scalars(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.role == "admin"
        )
    ).all()
    if member.role == "admin" and len(admins) == 1:
        raise Conflict("a project keeps at least one admin")
    session.delete(member)
    session.flush()
