# Long-running checks that are not part of CI (CI runs `bash scripts/test.sh`).
.PHONY: test faults bench

test:
	bash scripts/test.sh

# The fault battery at full length (2 minutes of SIGKILLs under the whole community's
# traffic, ...); each test prints its ledger: LEDGER <test>: published=… lost=0 ….
faults:
	FAULTS_SCALE=long .venv/bin/python -m pytest -s -p no:cacheprovider tests/test_faults.py

# The comparison of issue 7 (bench/README.md): sentinel, Node-RED and bare MQTT consumers
# side by side (~20 min); e.g. `make bench BENCH_ARGS="--repeat 1 --json out.json"`.
bench:
	bash bench/run.sh $(BENCH_ARGS)
