# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv (if missing) and install the project into it first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_run
DEMO_SEQUENCES ?= 720
DEMO_SPECIES ?= zebra,elephant,giraffe
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.5

.PHONY: install test demo demo-tune bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) ray_jobs/make_demo_data.py --out $(DEMO_DIR)/data --sequences $(DEMO_SEQUENCES) --seed 0 \
		--species $(DEMO_SPECIES)
	$(PY) ray_jobs/prepare.py --metadata $(DEMO_DIR)/data/train_metadata.csv \
		--metadata $(DEMO_DIR)/data/test_metadata.csv \
		--images-dir $(DEMO_DIR)/data/images --out $(DEMO_DIR)/prepared --long-side 512
	$(PY) ray_jobs/train.py --recipe cpu_tiny --metadata $(DEMO_DIR)/data/train_metadata.csv \
		--labels $(DEMO_DIR)/data/train_labels.csv --images-dir $(DEMO_DIR)/prepared \
		--out $(DEMO_DIR)/run --num-workers 2 --set stages.0.epochs=6 --set stages.1.epochs=5
	$(PY) ray_jobs/predict.py --model $(DEMO_DIR)/run/model.pt --metadata $(DEMO_DIR)/data/test_metadata.csv \
		--images-dir $(DEMO_DIR)/prepared --out $(DEMO_DIR)/submission.csv \
		--submission-format $(DEMO_DIR)/data/submission_format.csv
	$(PY) ray_jobs/evaluate.py --submission $(DEMO_DIR)/submission.csv --labels $(DEMO_DIR)/data/test_labels.csv \
		--prior-baseline $(DEMO_DIR)/run/model.pt
	$(PY) ray_jobs/report.py --run $(DEMO_DIR)/run --submission $(DEMO_DIR)/submission.csv \
		--labels $(DEMO_DIR)/data/test_labels.csv --metadata $(DEMO_DIR)/data/test_metadata.csv \
		--images-dir $(DEMO_DIR)/prepared --out $(DEMO_DIR)/report

# A 3-trial ASHA sweep of cpu_tiny on the demo data `make demo` prepared (a few minutes on 2 CPUs).
demo-tune: install
	$(PY) ray_jobs/tune.py --space cpu_smoke --recipe cpu_tiny --metadata $(DEMO_DIR)/data/train_metadata.csv \
		--labels $(DEMO_DIR)/data/train_labels.csv --images-dir $(DEMO_DIR)/prepared --out $(DEMO_DIR)/sweep

bench: install
	$(PY) ray_jobs/bench.py all --out bench.json

lint: install
	$(PY) -m ruff check src ray_jobs tests

clean:
	rm -rf $(DEMO_DIR) bench.json .pytest_cache
