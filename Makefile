# The two commands of the README's quick start: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup train test test-fast serve chromium fashion-mnist fonts distilled data docs evaluation-figures augment-figure gallery \
	serve-screenshot fashion-gallery env-sizes clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: mnist_jax needs Python 3.11 or newer; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[train,test,eval,serve]'
	touch $(STAMP)

data: setup
	bin/prepare-data

train: setup
	bin/train $(ARGS)

test: setup chromium fashion-mnist fonts
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The pure-function tier: small synthetic data, no MNIST to prepare, no training run.
test-fast: setup
	$(VENV)/bin/python -m pytest -m "not mnist" $(PYTEST_ARGS)

# The page and the API of a trained run (default: the newest) at http://127.0.0.1:8000/.
serve: setup
	bin/serve --run $(RUN)

# Installs Debian package $(1) through apt (as root, or with sudo); the targets below call it only when it is missing.
apt_install = sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(1) >/dev/null

# The browser tests drive Debian's Chromium.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { $(call apt_install,chromium); }

# The Fashion-MNIST tests prepare it from Debian's dataset-fashion-mnist package.
fashion-mnist:
	@[ -d /usr/share/datasets/fashion-mnist ] || { $(call apt_install,dataset-fashion-mnist); }

# The rendering tests draw a digit in a handwriting font (one of renders.HANDWRITING_FONT_PACKAGES).
fonts:
	@[ -d /usr/share/fonts/truetype/humor-sans ] || { $(call apt_install,fonts-humor-sans); }

# The strongest single-model recipe measured (99.69% mean over 3 seeds, see docs/experiments.md): three
# teachers, then `accurate` distilled from them as they label each augmented batch. Every stage is a
# bin/train run under $(DISTILLED): a finished one is skipped and an interrupted one resumed, so
# running it again carries on where it stopped.
DISTILLED ?= runs/distilled
distilled: setup
	bin/train --config configs/best.json --train.seed 0 --workdir $(DISTILLED)/teacher-best
	bin/train --config configs/accurate-batchnorm.json --train.seed 1 --workdir $(DISTILLED)/teacher-batchnorm
	bin/train --config configs/accurate-conv3.json --train.seed 0 --workdir $(DISTILLED)/teacher-conv3
	bin/train --config configs/distilled-student.json --train.seed 0 --workdir $(DISTILLED)/student \
		--train.teachers $(DISTILLED)/teacher-best,$(DISTILLED)/teacher-batchnorm,$(DISTILLED)/teacher-conv3

# The README's figures: the plots of a finished run (default: the newest).
RUN ?= runs/latest
docs:
	cp $(RUN)/accuracy.png $(RUN)/loss.png docs/

# The README's evaluation figures: bin/evaluate of a run (default: the newest), or of the ensemble
# of the runs in RUNS="runs/a runs/b ...", on the test split.
RUNS ?= $(RUN)
evaluation-figures: setup
	bin/evaluate $(foreach run,$(RUNS),--run $(run)) --out docs/evaluation

# docs/augment.png: real training digits and random augmentations of them, one row per transform.
augment-figure: setup
	$(VENV)/bin/python -m mnist_jax.cli.augment_figure --out docs/augment.png

# docs/fashion.png: Fashion-MNIST test items photographed and drawn, what a Fashion-MNIST run (FASHION_RUN)
# saw of each and its answer, with bin/eval-inputs' per-condition table on stdout.
FASHION_RUN ?= runs/fashion
fashion-gallery: setup
	bin/eval-inputs --run $(FASHION_RUN) --per-condition 300 --gallery docs/fashion.png

# The README's gallery and per-condition table: bin/predict's preprocessing on realistic renders.
gallery: setup
	bin/eval-inputs --run $(RUN) --gallery docs/gallery.png

# docs/serve.png: bin/serve's page in headless Chromium with a test digit drawn on it.
serve-screenshot: setup chromium
	$(VENV)/bin/python -m mnist_jax.cli.serve_screenshot --run $(RUN) --out docs/serve.png

# The README's installed sizes: the light set (`pip install .`: predicting with an ONNX model) against
# everything `make setup` installs, each in a fresh virtual environment under $(ENVS).
ENVS ?= /tmp/mnist-jax-envs
env-sizes:
	rm -rf $(ENVS)
	$(PYTHON) -m venv $(ENVS)/light
	$(ENVS)/light/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock .
	$(PYTHON) -m venv $(ENVS)/full
	$(ENVS)/full/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock '.[train,test,eval,serve]'
	@for env in light full; do \
		echo "$$env: $$(du -sm $(ENVS)/$$env | cut -f1) MiB, $$($(ENVS)/$$env/bin/python -m pip list \
			--disable-pip-version-check --format=freeze 2>/dev/null | wc -l) distributions (in $(ENVS)/$$env)"; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache
