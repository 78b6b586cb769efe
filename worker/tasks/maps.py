"""Light work on the cpu queue: a computed map's display copy and statistics, made ahead.

The attribution task (gpu queue) sends ``attrivue.map_products`` once its map is stored, so
that the GPU worker goes on to its next job while a CPU worker writes the int8 display map
and the statistics beside it. Both are caches (``backend.services.maps``): the API builds
whichever is missing on first request, so a lost or late message only costs that request
some time, and running the task twice writes the same files again.
"""

from __future__ import annotations

import logging

from celery import shared_task

from backend.core.db import session_scope
from backend.models import AttributionMap
from backend.services import attributions
from backend.services.errors import ServiceError
from backend.storage import get_storage

log = logging.getLogger(__name__)


def make_map_products(attribution_id: int) -> bool:
    """Build the display map and the statistics of a succeeded map; False if it has none."""
    storage = get_storage()
    with session_scope() as session:
        row = session.get(AttributionMap, attribution_id)
        if row is None or row.status != "succeeded":
            log.info("attribution %s has no stored map; nothing to prepare", attribution_id)
            return False
        try:
            attributions.display_map(storage, row)
            attributions.attribution_stats(session, storage, row)
        except ServiceError as exc:  # the file vanished, or a mask off the map's grid
            log.warning("attribution %s: %s", attribution_id, exc.detail)
            return False
    log.info("attribution %s: display map and statistics prepared", attribution_id)
    return True


@shared_task(name="attrivue.map_products", acks_late=True, reject_on_worker_lost=True)
def map_products_task(attribution_id: int) -> None:
    make_map_products(attribution_id)
