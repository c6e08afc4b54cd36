"""pacs-triage: the DICOM listener, durable store, study assembly, configuration and CLI."""

import logging

# pynetdicom logs whole requests (patient identifiers included) below WARNING.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

from pynetdicom import _config as _pynetdicom_config  # noqa: E402

# Nor do we let it log C-FIND/C-MOVE identifiers (patient IDs) at any level.
_pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
_pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False

import pydicom.config as _pydicom_config  # noqa: E402

# Received headers are often slightly off; pydicom's warnings about them quote the
# values (names, IDs). We check what matters ourselves and keep values out of logs.
_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE
