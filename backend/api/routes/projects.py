"""Projects (workspaces) and their members."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import CurrentUser, SessionDep, Writer
from backend.models import Project, ProjectMember, User
from backend.schemas.project import (
    MemberPublic,
    MemberSet,
    MembersPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
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
def create_project(body: ProjectCreate, user: Writer, session: SessionDep) -> ProjectPublic:
    """Create a project; its creator becomes its admin."""
    project = svc.create_project(session, name=body.name, description=body.description, user=user)
    session.commit()
    return ProjectPublic.model_validate(project).model_copy(update={"role": "admin"})


@router.get("/{project_id}", operation_id="getProject")
def get_project(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    """One project."""
    role = svc.require(session, user, project_id)
    project = svc.get_project(session, project_id)
    return ProjectPublic.model_validate(project).model_copy(update={"role": role})


def _members(session: SessionDep, project_id: int) -> MembersPublic:
    rows = session.execute(
        select(ProjectMember.user_id, User.username, ProjectMember.role)
        .join(User, User.id == ProjectMember.user_id)
        .where(ProjectMember.project_id == project_id)
        .order_by(User.username)
    ).all()
    data = [MemberPublic(user_id=u, username=n, role=r) for u, n, r in rows]
    return MembersPublic(data=data, count=len(data))


@router.get("/{project_id}/members", operation_id="listMembers")
def list_members(project_id: int, user: CurrentUser, session: SessionDep) -> MembersPublic:
    """The members of a project and their roles."""
    svc.require(session, user, project_id)
    return _members(session, project_id)


@router.put("/{project_id}/members", operation_id="setMember")
def set_member(
    project_id: int, body: MemberSet, user: CurrentUser, session: SessionDep
) -> MembersPublic:
    """Add a user to the project or change their role (project admins)."""
    svc.require(session, user, project_id, svc.ADMIN)
    project = svc.get_project(session, project_id)
    svc.add_member(session, project=project, username=body.username, role=body.role)
    session.commit()
    return _members(session, project_id)


@router.delete("/{project_id}/members/{user_id}", operation_id="removeMember", status_code=204)
def remove_member(project_id: int, user_id: int, user: CurrentUser, session: SessionDep) -> None:
    """Remove a member (project admins); a project keeps at least one admin."""
    svc.require(session, user, project_id, svc.ADMIN)
    svc.remove_member(session, project=svc.get_project(session, project_id), user_id=user_id)
    session.commit()
