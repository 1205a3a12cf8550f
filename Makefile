# The README's commands are `./setup.sh demo` and `./setup.sh test`; these are the same.
# `make bench` runs every benchmark in its quick mode (as root: some need it), as CI does.
.PHONY: setup demo test bench
setup:
	./setup.sh setup
demo:
	./setup.sh demo
test:
	./setup.sh test
bench:
	@for b in benchmarks/*.py; do \
		echo "== $$b --quick"; \
		PYTHONPATH=. nice -n 10 .venv/bin/python "$$b" --quick || exit 1; \
	done
