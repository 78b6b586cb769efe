"""Research experiments of docs/method.md section 6, run by ``python -m worker.research``.

One module per experiment (``four_settings``, ``shortcut``, ``remedies``, ``regression``,
``corrections``, ``segmentation``, ``suite`` for ``regimes``), what they share in ``common``
and the command line in ``cli`` (``python -m worker.experiments`` is its alias). The names
below are the public interface of the classification experiments, for scripts and tests.
"""

from worker.research.common import (
    INTRO,
    SETTING_LABELS,
    Options,
    replace_section,
    write_section,
)
from worker.research.four_settings import FOUR_SETTINGS, four_settings_verdict, run_four_settings
from worker.research.shortcut import SHORTCUT_SETTINGS, run_shortcut, shortcut_verdict

__all__ = [
    "FOUR_SETTINGS",
    "INTRO",
    "SETTING_LABELS",
    "SHORTCUT_SETTINGS",
    "Options",
    "four_settings_verdict",
    "replace_section",
    "run_four_settings",
    "run_shortcut",
    "shortcut_verdict",
    "write_section",
]
