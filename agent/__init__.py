"""pacs-triage: the DICOM listener, durable store, study assembly, configuration and CLI."""

import logging

# pynetdicom logs whole requests (patient identifiers included) below WARNING.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
