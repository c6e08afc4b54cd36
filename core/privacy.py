"""What the DICOM libraries may say: nothing that identifies a patient.

pynetdicom logs whole requests (patient identifiers included) below WARNING, and C-FIND/C-MOVE
identifiers at any level unless told not to; pydicom's warnings about slightly-off received
headers quote the values (names, IDs). We check what matters ourselves and keep values out of
logs. These are process-wide library settings, so they are applied explicitly — by every
command at its start (`agent.cli.main`), by a listener, and by an outgoing association — never
as a side effect of importing a module. Calling it again changes nothing.
"""

from __future__ import annotations

import logging


def quiet_dicom_libraries() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    import pydicom.config as pydicom_config
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
