# The two commands of the README. Each creates or reuses .venv by itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# MNIST-LT (IR 100, Dirichlet(1.0), 10 clients) on the embedded real MNIST digits.
demo: venv
	$(VENV)/bin/python -m tasks.mnist_lt --algo=fedavg --imbalance_ratio=100 \
	  --partition=dirichlet --dirichlet_alpha=1.0 --num_clients=10 \
	  --clients_per_round=10 --rounds=50 --local_epochs=2 --eval_every=10 \
	  --output_dir=runs/demo

test: venv
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
