# The two commands of the README. Each creates or reuses .venv by itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test venv clean gpu

venv: $(STAMP)

# The lock, then the project itself, editable (import tff_imbalance and the
# tff-imbalance-* commands from any directory), with the lock's setuptools.
$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# FedAvg and Balanced Softmax (global prior) on one MNIST-LT split (IR 100,
# Dirichlet(1.0), 10 clients, embedded real MNIST): per-class table side by
# side and runs/demo/demo.png (tasks/demo.py).
demo: venv
	$(VENV)/bin/python -m tasks.demo --output_dir=runs/demo

test: venv
	$(VENV)/bin/python -m pytest -q tests

# Optional: the CUDA 11.8 / cuDNN wheels TensorFlow 2.14.1 needs to see GPUs
# (--executor=inprocess --device=gpu), on top of the CPU lock.
gpu: venv
	$(VENV)/bin/pip install --quiet --no-deps -r requirements-gpu.txt

clean:
	rm -rf $(VENV) runs
