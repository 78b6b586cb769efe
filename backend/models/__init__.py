"""SQLAlchemy ORM models, one module per aggregate."""

from backend.models.attribution import AttributionMap
from backend.models.audit import AuditEvent
from backend.models.base import Base
from backend.models.corrections import CorrectedTarget, EpochMap
from backend.models.dataset import Dataset, Subject
from backend.models.evidence import EvidenceCheck
from backend.models.job import Job, JobStatus
from backend.models.ops import LoginAttempt, UploadSession, Worker
from backend.models.project import Project, ProjectMember
from backend.models.review import Review
from backend.models.run import Run, RunMetric, RunPrediction
from backend.models.shortcut import CohortMap, ShortcutReport
from backend.models.user import ApiToken, Role, User

__all__ = [
    "ApiToken",
    "AttributionMap",
    "AuditEvent",
    "Base",
    "CohortMap",
    "CorrectedTarget",
    "Dataset",
    "EpochMap",
    "EvidenceCheck",
    "Job",
    "JobStatus",
    "LoginAttempt",
    "Project",
    "ProjectMember",
    "Review",
    "Role",
    "Run",
    "ShortcutReport",
    "RunMetric",
    "RunPrediction",
    "Subject",
    "UploadSession",
    "User",
    "Worker",
]
