# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,train,test]'
	# Bytecode for the package, as a regular pip install writes it: an editable install leaves it
	# to the first import, which never writes it where PYTHONDONTWRITEBYTECODE is set, and then
	# every `stackscore` process compiles the package again (~0.03 s of each start).
	$(PY) -m compileall -q stackscore
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m compileall -q stackscore
	$(VENV)/bin/stackscore demo --workdir demo-run

test: $(STAMP)
	$(PY) -m compileall -q stackscore
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo-run
