# Long-running checks that are not part of CI (CI runs `bash scripts/test.sh`).
.PHONY: test faults

test:
	bash scripts/test.sh

# The fault battery at full length (2 minutes of SIGKILLs under the whole community's
# traffic, ...); each test prints its ledger: LEDGER <test>: published=… lost=0 ….
faults:
	FAULTS_SCALE=long .venv/bin/python -m pytest -s -p no:cacheprovider tests/test_faults.py
