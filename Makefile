# pacs-triage — two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: run test bench validate install system-run system-test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

system-run:
	sh deploy/install-system-packages.sh redis-server

system-test:
	sh deploy/install-system-packages.sh redis-server redis-sentinel dcmtk orthanc prometheus rabbitmq-server chromium chromium-driver

## make run: set up and start the service on its embedded defaults
run: system-run install
	$(BIN)/pacs-triage serve

## make test: set up what the tests need (Redis + Sentinel, DCMTK, Orthanc, Prometheus, RabbitMQ, Python packages) and run them
test: system-test install
	$(BIN)/python -m pytest -ra --durations=15

## make bench: load (one association, 8 senders, sustained load, large study, idle) and ingest against
## DCMTK storescp (table in bench/results.md), rule and CT analysis timings
bench: system-test install
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_rules.py
	$(BIN)/python bench/bench_ct.py

## make validate: the CT analyser on the seven independent phantom families (first-sight seeds), report in docs/ct-validation.md
VALIDATE_SEED ?= 20261126
VALIDATE_N    ?= 200
validate: install
	$(BIN)/python bench/validate_ct.py --seed $(VALIDATE_SEED) --n $(VALIDATE_N) --report docs/ct-validation.md --section final
	$(BIN)/python bench/validate_ct.py --generator tests/blind_phantom2.py --seed 7 --n 40 --report docs/ct-validation.md --section family2
	$(BIN)/python bench/validate_ct.py --generator tests/phantom3_blind/spine_phantom3.py --seed 20261127 --n 40 --report docs/ct-validation.md --section family3
	$(BIN)/python bench/validate_ct.py --generator tests/phantom4_blind/spine_phantom4.py --seed 20261201 --n 40 --report docs/ct-validation.md --section family4
	$(BIN)/python bench/validate_ct.py --generator tests/phantom5_blind/spine_phantom5.py --seed 20261205 --n 40 --report docs/ct-validation.md --section family5
	$(BIN)/python bench/validate_ct.py --generator tests/phantom6_blind/spine_phantom6.py --seed 20261207 --n 40 --report docs/ct-validation.md --section family6
	$(BIN)/python bench/validate_ct.py --generator tests/phantom7_blind/spine_phantom7.py --seed 20261306 --n 30 --report docs/ct-validation.md --section family7

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
