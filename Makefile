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

DECODE_DIR ?= decode_check
DECODE_SEEDS ?= 666 667 668

.PHONY: install test demo demo-tune decode-check bench lint clean

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

# Fast vs exact decode on a task the model learns (README: Latest benchmark figures): the demo's data with
# every frame 2048x1536, prepared in each mode, the demo's training per mode and seed, each model scored in
# its own mode and (forced) in the other. About 40 minutes on 2 CPUs; one metric line per model and mode.
decode-check: install
	$(PY) ray_jobs/make_demo_data.py --out $(DECODE_DIR)/data --sequences $(DEMO_SEQUENCES) --seed 0 \
		--species $(DEMO_SPECIES) --frame-sizes 2048x1536
	for mode in exact fast; do \
		$(PY) ray_jobs/prepare.py --metadata $(DECODE_DIR)/data/train_metadata.csv \
			--metadata $(DECODE_DIR)/data/test_metadata.csv --images-dir $(DECODE_DIR)/data/images \
			--out $(DECODE_DIR)/prepared_$$mode --long-side 512 --decode $$mode || exit 1; \
	done
	rm -f $(DECODE_DIR)/results.txt
	for seed in $(DECODE_SEEDS); do for mode in exact fast; do \
		$(PY) ray_jobs/train.py --recipe cpu_tiny --metadata $(DECODE_DIR)/data/train_metadata.csv \
			--labels $(DECODE_DIR)/data/train_labels.csv --images-dir $(DECODE_DIR)/prepared_$$mode \
			--out $(DECODE_DIR)/run_$${mode}_$$seed --num-workers 2 --set stages.0.epochs=6 \
			--set stages.1.epochs=5 --set seed=$$seed || exit 1; \
		for pixels in exact fast; do \
			sub=$(DECODE_DIR)/submission_$${mode}_$${seed}_on_$$pixels.csv; \
			$(PY) ray_jobs/predict.py --model $(DECODE_DIR)/run_$${mode}_$$seed/model.pt --force-decode \
				--metadata $(DECODE_DIR)/data/test_metadata.csv --images-dir $(DECODE_DIR)/prepared_$$pixels \
				--out $$sub --submission-format $(DECODE_DIR)/data/submission_format.csv || exit 1; \
			echo "decode-check: trained $$mode, seed $$seed, scored on $$pixels: $$($(PY) ray_jobs/evaluate.py \
				--submission $$sub --labels $(DECODE_DIR)/data/test_labels.csv | tail -1)" \
				| tee -a $(DECODE_DIR)/results.txt; \
		done; \
	done; done

bench: install
	$(PY) ray_jobs/bench.py all --out bench.json

lint: install
	$(PY) -m ruff check src ray_jobs tests

clean:
	rm -rf $(DEMO_DIR) $(DECODE_DIR) bench.json .pytest_cache
