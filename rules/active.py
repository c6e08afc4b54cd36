"""The rulebook in force, swapped atomically when the rule files change.

The lead wires reload() to SIGHUP and check_for_changes() to a periodic watch.
An invalid edit is logged as "file:line: message" and the previous rulebook stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.metrics import rulebook_reload_failures as reload_failures
from rules.engine import DEFAULT_DIRECTORY, Rulebook, RulebookError
from rules.loader import content_hash, rule_files

logger = logging.getLogger(__name__)


class ActiveRulebook:
    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        self._rulebook = Rulebook.load(self.directory)
        self._mtimes = self._stat()

    def get(self) -> Rulebook:
        return self._rulebook

    def _stat(self) -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in rule_files(self.directory)}

    def reload(self) -> bool:
        """Load the rule files again if their content changed; True if a new rulebook took effect."""
        self._mtimes = self._stat()
        try:
            if content_hash(rule_files(self.directory)) == self._rulebook.version:
                return False
            new = Rulebook.load(self.directory)
        except (RulebookError, OSError) as err:
            reload_failures.inc()
            logger.error("rulebook not reloaded, keeping %s: %s", self._rulebook.version, err)
            return False
        logger.info("rulebook %s replaces %s", new.version, self._rulebook.version)
        self._rulebook = new
        return True

    def check_for_changes(self) -> bool:
        """Cheap: reload only when a rule file was added, removed or touched."""
        try:
            if self._stat() == self._mtimes:
                return False
        except OSError:
            return False
        return self.reload()
