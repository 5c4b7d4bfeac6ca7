# Two entry points, both self-contained on a fresh machine:
#   make demo   create .venv, install partopt, run `partopt demo`
#   make test   same set-up, then the whole pytest suite (slow cases: make test-slow)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench sweep report paper clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/partopt demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

# the default heuristic-vs-optimum sweep (resumes; --fresh to start over), then its report
sweep: $(STAMP)
	$(VENV)/bin/partopt bench benchmarks/default.toml --jobs 2 --report paper/generated

report: $(STAMP)
	$(VENV)/bin/partopt report benchmarks/results/default.csv --out paper/generated --quiet

# the PDF: formulations/ + the committed results; needs pdflatex (Debian: texlive-latex-recommended)
paper: report
	@command -v pdflatex >/dev/null || { echo "make paper needs pdflatex: apt-get install texlive-latex-recommended"; exit 1; }
	cd paper && pdflatex -interaction=nonstopmode -halt-on-error main.tex >/dev/null \
	  && pdflatex -interaction=nonstopmode -halt-on-error main.tex | tail -2

clean:
	rm -rf $(VENV) build *.egg-info
