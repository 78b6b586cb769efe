"""A clinician's rating of one attribution map."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, CreatedAt


class Review(CreatedAt, Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    attribution_id: Mapped[int] = mapped_column(
        ForeignKey("attribution_maps.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rating: Mapped[int] = mapped_column(Integer)  # 1..5: relevance lies on the lesions
    trust: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    # The reviewer's drawn correction (uint8 labels on the subject's grid: 1 missed lesion,
    # 2 spurious pathological relevance), relative to the data directory; a future training target.
    correction_path: Mapped[str | None] = mapped_column(String(512), default=None)

    @property
    def has_correction(self) -> bool:
        return self.correction_path is not None
