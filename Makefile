# Thin wrapper over scripts/dev, for those who type `make`.
.PHONY: setup test lint format demo lock

setup:
	scripts/dev setup
test:
	scripts/dev test
lint:
	scripts/dev lint
format:
	scripts/dev format
demo:
	scripts/dev demo
lock:
	scripts/dev lock
