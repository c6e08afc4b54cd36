"""Prometheus metrics. Labels never carry a patient identifier or free text."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1800)

instances_received = Counter(
    "pacs_triage_instances_received", "Instances received by C-STORE, by outcome", ["status"]
)  # stored | duplicate | quarantined | failed
bytes_received = Counter("pacs_triage_bytes_received", "Bytes of DICOM stored")
associations_active = Gauge("pacs_triage_associations_active", "Open DICOM associations")
associations = Counter("pacs_triage_associations", "DICOM associations accepted")
associations_rejected = Counter("pacs_triage_associations_rejected", "DICOM associations rejected")
quarantined = Counter("pacs_triage_quarantined", "Datasets quarantined, by reason", ["reason"])

studies_stable = Counter("pacs_triage_studies_stable", "Studies that became stable and were queued")
triage_duration = Histogram("pacs_triage_triage_duration_seconds", "Pipeline duration per study")
triage_prepared = Counter("pacs_triage_triage_prepared", "Triages prepared before the quiet period ended, by what "
                          "became of them: used, changed (an input changed: computed afresh), not_ready (the "
                          "triage found none to use), failed (the preparation raised)", ["outcome"])
triage_failures = Counter("pacs_triage_triage_failures", "Pipeline runs that raised (retried by dramatiq)")
triage_failed_entries = Counter("pacs_triage_triage_failed_entries",
                                "Studies put on the worklist as 'triage failed — read at order priority'")
triage_poisoned = Counter("pacs_triage_triage_poisoned", "Triages that killed their worker repeatedly, quarantined")
reconciled_instances = Counter("pacs_triage_reconciled_instances",
                               "Stored instances indexed by reconciliation (Redis was away or lost data)")
requeued_studies = Counter("pacs_triage_requeued_studies",
                           "Studies queued again because their triage did not finish within the lease")
studies_queued = Gauge("pacs_triage_studies_queued", "Studies queued for triage, not yet triaged")
index_failures = Counter("pacs_triage_index_failures", "Stored instances that could not be indexed at once")
end_to_end_latency = Histogram(
    "pacs_triage_end_to_end_latency_seconds",
    "Last instance received -> entry pushed to a sink",
    ["sink", "priority"],
    buckets=LATENCY_BUCKETS,
)
flags = Counter("pacs_triage_flags", "Flags raised, by code", ["code"])
priorities = Counter("pacs_triage_priorities", "Suggested priorities", ["priority"])
analyser_duration = Histogram("pacs_triage_analyser_duration_seconds", "Image analyser duration", ["analyser"])

sink_pushes = Counter("pacs_triage_sink_pushes", "Successful sink deliveries", ["sink"])
sink_failures = Counter("pacs_triage_sink_failures", "Failed sink delivery attempts", ["sink"])
sink_dead_letters = Counter("pacs_triage_sink_dead_letters", "Deliveries given up after the last attempt", ["sink"])

priors_queries = Histogram("pacs_triage_priors_query_seconds", "C-FIND latency for prior studies")
priors_failures = Counter("pacs_triage_priors_failures", "Failed C-FIND attempts for prior studies")

rulebook = Info("pacs_triage_rulebook", "Active rulebook")
rulebook_reload_failures = Counter("pacs_triage_rulebook_reload_failures", "Rule files rejected on reload")
queue_depth = Gauge("pacs_triage_queue_depth", "Messages waiting in a dramatiq queue", ["queue"])
data_free_bytes = Gauge("pacs_triage_data_free_bytes", "Free space on the data directory's file system")
studies_removed = Counter("pacs_triage_studies_removed", "Studies removed from the data directory by retention")
studies_pending = Gauge("pacs_triage_studies_pending", "Studies receiving instances, not yet stable")
data_min_free_bytes = Gauge("pacs_triage_data_min_free_bytes",
                            "The free-space watermark (min_free_bytes): below it C-STORE gets 0xA700")
redis_up = Gauge("pacs_triage_redis_up", "1 if Redis answered a PING at the last scrape, else 0")
listener_up = Gauge("pacs_triage_listener_up", "1 if the DICOM listener is bound and accepting, else 0")

hl7_messages = Counter("pacs_triage_hl7_messages", "HL7 messages received on the MLLP listener, by type and ACK code",
                       ["type", "ack"])
order_patient_mismatch = Counter("pacs_triage_order_patient_mismatch",
                                 "Orders, reports or joins refused: same accession number, another patient")
order_retriages = Counter("pacs_triage_order_retriages", "Studies queued for triage again because their order arrived")
orders_joined = Counter("pacs_triage_orders_joined", "Triages that read an order, by source", ["source"])
entries_closed = Counter("pacs_triage_entries_closed", "Worklist entries closed by a signed report, by how", ["by"])
#: 1 min .. 7 days
REPORT_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
time_to_report = Histogram(
    "pacs_triage_time_to_report_seconds",
    "Last instance received -> report signed, by suggested priority and by the order's priority",
    ["priority", "order_priority"],
    buckets=REPORT_BUCKETS,
)

# Series that exist from the start, so that rate() and alerts see a zero, not an absence.
for _status in ("stored", "duplicate", "quarantined", "failed"):
    instances_received.labels(_status)
for _sink in ("pacs", "ups", "hl7", "webhook"):
    sink_pushes.labels(_sink)
    sink_failures.labels(_sink)
    sink_dead_letters.labels(_sink)
for _priority in ("STAT", "URGENT", "ROUTINE"):
    priorities.labels(_priority)


# --- several listener processes, one /metrics ----------------------------------------------
#: Gauges that add up over listener processes (counters and histograms always do).
SUMMED_GAUGES = {"pacs_triage_associations_active"}


def merge_expositions(own: str, others: list[str]) -> str:
    """This process's exposition with the pacs_triage counters, histograms and summed gauges of
    `others` (its listener processes) added in, so that one scrape counts every process.
    Process metrics (process_*, python_*) and other gauges stay this process's own."""
    from collections import defaultdict

    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.utils import floatToGoString

    def summed(family) -> bool:
        return family.name.startswith("pacs_triage_") and (
            family.type in ("counter", "histogram") or family.name in SUMMED_GAUGES)

    extra: dict[str, dict[tuple, float]] = defaultdict(dict)
    for text in others:
        for family in text_string_to_metric_families(text):
            if not summed(family):
                continue
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                extra[family.name][key] = extra[family.name].get(key, 0.0) + s.value

    def esc(value: str) -> str:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

    def line(name: str, labels: dict, value: float) -> str:
        inner = ",".join(f'{k}="{esc(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {floatToGoString(value)}" if inner else f"{name} {floatToGoString(value)}"

    out = []
    for family in text_string_to_metric_families(own):
        name = family.name + ("_total" if family.type == "counter" else "")
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {family.type}")
        more = extra.pop(family.name, {}) if summed(family) else {}
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            out.append(line(s.name, s.labels, s.value + more.pop(key, 0.0)))
        for (sample, labels), value in sorted(more.items()):
            out.append(line(sample, dict(labels), value))
    return "\n".join(out) + "\n"
