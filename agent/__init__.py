"""pacs-triage: the DICOM listener, durable store, study assembly, configuration and CLI.

Importing it changes nothing in the process: the DICOM libraries' settings that keep patient
data out of logs are applied at start (`core.privacy.quiet_dicom_libraries`).
"""
