"""Projects (workspaces) and their members.

Policy (docs/user-guide.md, "Projects and roles"): project admins manage their project's
members; site admins may manage the members of any project, also when they are not members
(to repair a project whose admins left). Every membership and role change is written to the
audit log, a site admin's change to a project they are not an admin of is marked as such, and
a project always keeps at least one admin (the last one can be neither removed nor demoted).
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import AuditDep, CurrentUser, SessionDep, Writer
from backend.models import Project, ProjectMember, User
from backend.schemas.project import (
    MemberPublic,
    MemberSet,
    MembersPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUpdate,
)
from backend.services import projects as svc

router = APIRouter(prefix="/projects", tags=["projects"])


@router.get("", operation_id="listProjects")
def list_projects(user: CurrentUser, session: SessionDep) -> ProjectsPublic:
    """The projects the user is a member of, with their role in each."""
    rows = session.execute(
        select(Project, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == user.id)
        .order_by(Project.id)
    ).all()
    data = [ProjectPublic.model_validate(p).model_copy(update={"role": role}) for p, role in rows]
    return ProjectsPublic(data=data, count=len(data))


@router.post("", operation_id="createProject", status_code=201)
def create_project(
    body: ProjectCreate, user: Writer, session: SessionDep, audit: AuditDep
) -> ProjectPublic:
    """Create a project; its creator becomes its admin."""
    project = svc.create_project(session, name=body.name, description=body.description, user=user)
    audit.event(
        "member_add",
        "project_member",
        object_id=user.id,
        project_id=project.id,
        detail=f"{user.username} as admin (created the project)",
    )
    return ProjectPublic.model_validate(project).model_copy(update={"role": "admin"})


@router.get("/{project_id}", operation_id="getProject")
def get_project(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    """One project."""
    role = svc.require(session, user, project_id)
    project = svc.get_project(session, project_id)
    return ProjectPublic.model_validate(project).model_copy(update={"role": role})


@router.patch("/{project_id}", operation_id="updateProject")
def update_project(
    project_id: int, body: ProjectUpdate, user: CurrentUser, session: SessionDep, audit: AuditDep
) -> ProjectPublic:
    """Change the description, or blind / open the review round (project admins; audited)."""
    acting = svc.require(session, user, project_id, svc.ADMIN)
    project = svc.get_project(session, project_id)
    if body.description is not None:
        project.description = body.description
    if body.review_blinded is not None and body.review_blinded != project.review_blinded:
        project.review_blinded = body.review_blinded
        audit.event(
            "review_blinding",
            "project",
            object_id=project_id,
            project_id=project_id,
            detail=f"review round {'blinded' if body.review_blinded else 'opened'}"
            + _override(acting),
            commit=False,
        )
    session.commit()
    role = svc.member_role(session, user, project_id)
    return ProjectPublic.model_validate(project).model_copy(update={"role": role})


def _members(session: SessionDep, project_id: int) -> MembersPublic:
    rows = session.execute(
        select(ProjectMember.user_id, User.username, ProjectMember.role)
        .join(User, User.id == ProjectMember.user_id)
        .where(ProjectMember.project_id == project_id)
        .order_by(User.username)
    ).all()
    # The stored role is a plain string: validated against ProjectRole here.
    data = [
        MemberPublic.model_validate({"user_id": u, "username": n, "role": r}) for u, n, r in rows
    ]
    return MembersPublic(data=data, count=len(data))


@router.get("/{project_id}/members", operation_id="listMembers")
def list_members(project_id: int, user: CurrentUser, session: SessionDep) -> MembersPublic:
    """The members of a project and their roles."""
    svc.require(session, user, project_id)
    return _members(session, project_id)


def _override(acting_role: str) -> str:
    """The note that marks a site admin acting on a project they do not administer."""
    return " (site admin override: not a project admin)" if acting_role == "site-admin" else ""


@router.put("/{project_id}/members", operation_id="setMember")
def set_member(
    project_id: int, body: MemberSet, user: CurrentUser, session: SessionDep, audit: AuditDep
) -> MembersPublic:
    """Add a user to the project or change their role (project admins, site admins; audited).

    The project's last admin cannot be demoted.
    """
    acting = svc.require(session, user, project_id, svc.ADMIN)
    project = svc.get_project(session, project_id)
    member, old_role = svc.add_member(
        session, project=project, username=body.username, role=body.role
    )
    if old_role != body.role:
        change = f"as {body.role}" if old_role is None else f"{old_role} -> {body.role}"
        audit.event(
            "member_add" if old_role is None else "member_role",
            "project_member",
            object_id=member.user_id,
            project_id=project_id,
            detail=f"{body.username} {change}{_override(acting)}",
            commit=False,
        )
    session.commit()
    return _members(session, project_id)


@router.delete("/{project_id}/members/{user_id}", operation_id="removeMember", status_code=204)
def remove_member(
    project_id: int, user_id: int, user: CurrentUser, session: SessionDep, audit: AuditDep
) -> None:
    """Remove a member (project admins, site admins; audited); a project keeps one admin."""
    acting = svc.require(session, user, project_id, svc.ADMIN)
    removed = svc.remove_member(
        session, project=svc.get_project(session, project_id), user_id=user_id
    )
    target = session.get(User, user_id)
    audit.event(
        "member_remove",
        "project_member",
        object_id=user_id,
        project_id=project_id,
        detail=f"{target.username if target else user_id} (was {removed.role}){_override(acting)}",
        commit=False,
    )
    session.commit()
