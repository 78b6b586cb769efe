"""Named run presets (attrivue_core.presets): what the launch form offers at its top."""

from __future__ import annotations

from fastapi import APIRouter

from attrivue_core.presets import PRESETS, UnknownPreset, get_preset
from backend.api.deps import CurrentUser
from backend.schemas.run import Preset, PresetsPublic
from backend.services.errors import NotFound

router = APIRouter(prefix="/presets", tags=["runs"])


def _public(name: str) -> Preset:
    preset = get_preset(name)
    return Preset(name=name, **preset)


@router.get("", operation_id="listPresets")
def list_presets(user: CurrentUser) -> PresetsPublic:
    """Every preset with its title, description and each RunConfig value it sets (the other
    fields keep RunConfig's defaults). POST /runs with ``preset`` applies one."""
    data = [_public(name) for name in PRESETS]
    return PresetsPublic(data=data, count=len(data))


@router.get("/{name}", operation_id="getPreset")
def get_preset_route(name: str, user: CurrentUser) -> Preset:
    """One preset."""
    try:
        return _public(name)
    except UnknownPreset as exc:
        raise NotFound(str(exc)) from None
