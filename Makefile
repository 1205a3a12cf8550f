# The README's two commands are `./setup.sh demo` and `./setup.sh test`; these are the same.
.PHONY: setup demo test bench
setup:
	./setup.sh setup
demo:
	./setup.sh demo
test:
	./setup.sh test
