# normlab: the commands a user and CI run. `make demo` is the whole pipeline on a CPU in
# minutes; `make test` is the test suite (what .ci/run calls); `make reproduce` is the
# paper's grid on a GPU.

CARGO        ?= cargo
BIN          := target/release/normlab
# Where CIFAR-10 comes from: the JPEG copy beside the repo when present, else the official
# binary archive (downloaded, MD5-checked). Override: make demo CIFAR_SOURCE=/path/or/url
CIFAR_SOURCE ?= $(if $(wildcard ../shared/data/cifar10-jpeg.tar.gz),../shared/data/cifar10-jpeg.tar.gz,https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)
DATA_DIR     ?= data/cifar10
RESULTS      ?= results
DEVICES      ?= cuda:0
JOBS         ?= 2

.PHONY: all build test lint demo reproduce short data cuda gpu-bundle bench clean-results

all: build

build:
	$(CARGO) build --release

# The test suite: unit tests, CLI end-to-end tests, doc tests (CPU only, no GPU needed).
test:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) clippy --all-targets -- -D warnings

# Import CIFAR-10 into the official binary layout (a no-op when already complete).
data: build
	$(BIN) data --source $(CIFAR_SOURCE) --out $(DATA_DIR)

# The whole pipeline on a CPU: small subsets, each regularizer once, robust accuracy on a
# few hundred images, then the report (Markdown + SVG) under results/.
demo: data
	$(BIN) run plans/demo.ron --data $(DATA_DIR) --results $(RESULTS) --devices cpu
	$(BIN) report $(RESULTS)/demo.csv --plan plans/demo.ron --out $(RESULTS)/demo --format both

# The paper's 68 cells with the full protocol, on CUDA (build with `make cuda` first).
reproduce: data
	$(BIN) run plans/paper.ron --data $(DATA_DIR) --results $(RESULTS) --devices $(DEVICES) --jobs-per-device $(JOBS)
	$(BIN) report $(RESULTS)/paper.csv --plan plans/paper.ron --out $(RESULTS)/paper --format both

# The paper's grid with a shortened schedule (about four GPU-hours on an H200 at the measured speed).
short: data
	$(BIN) run plans/short.ron --data $(DATA_DIR) --results $(RESULTS) --devices $(DEVICES) --jobs-per-device $(JOBS)
	$(BIN) report $(RESULTS)/short.csv --plan plans/short.ron --out $(RESULTS)/short --format both

# CUDA + cuDNN build on a machine without a GPU: installs the pinned toolchain from PyPI
# into .cuda-toolchain/ (once, ~1.7 GB), then builds target/release/normlab with the GPU
# backends.
cuda:
	bash scripts/cuda-toolchain.sh >/dev/null
	. .cuda-toolchain/env.sh && $(CARGO) build --release --features cuda,cudnn

# What a GPU machine needs: the stripped, xz-compressed binary (about 5 MB) in .gpu-bin/.
gpu-bundle:
	mkdir -p .gpu-bin
	strip -o .gpu-bin/normlab $(BIN)
	xz -9f .gpu-bin/normlab
	$(if $(wildcard $(CIFAR_SOURCE)),cp $(CIFAR_SOURCE) .gpu-bin/cifar10.tar.gz)
	@ls -l .gpu-bin/

bench: build
	$(BIN) bench norms --model resnet18
	$(BIN) bench train --model vgg11 --steps 5
