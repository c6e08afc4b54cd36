"""Sinks deliver a worklist entry to one destination (PACS, worklist manager, RIS, web hook).

Each sink module exposes ``push(entry: WorklistEntry, destination, config) -> str`` which
delivers the entry once and returns a short human-readable receipt, or raises
`SinkError`. Delivery is idempotent at the destination: identifiers are
deterministic per study, so a retry or a re-triage replaces rather than duplicates.

The entry is the typed `core.entry.WorklistEntry` (its keys, types and meaning are declared
there and published as docs/worklist-entry.schema.json). A sink also accepts its JSON form, as
the worklist stores it, and reads it with `WorklistEntry.coerce`: an entry off the schema is a
`SinkError` that retrying cannot help.
"""


class SinkError(Exception):
    """A delivery that did not happen. `retryable` False means retrying cannot help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable
