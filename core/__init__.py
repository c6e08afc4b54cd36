"""pacs-triage's bottom layer: settings, the study model, metrics, the Redis index and keys.

Imported by every other package (rules, workers, agent); imports none of them.
"""
